// Package webhooks posts delivery events to applications (issue 18). Each
// configured webhook is one durable pull consumer on the events stream
// (JETRELAY_EVENTS) with the pinned_client priority policy: one node of a
// cluster at a time fetches a batch, POSTs it as a signed JSON array, and
// acks it only after a 2xx reply, so events are sent at least once, once
// per cluster, and in stream order (hence in order per message). A failing
// endpoint is retried with backoff by its own goroutine; it delays nothing
// else. Status (last success, last error) lives in the KV bucket
// jetrelay_webhooks, so `jetrelay webhooks ls` sees it from any node.
package webhooks

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/relay/events"
)

// Webhook event types (config webhooks[].events).
const (
	TypeDelivered         = "delivered"
	TypeDeferred          = "deferred"
	TypeFailed            = "failed"
	TypeBounced           = "bounced"
	TypeDelayNotice       = "delay_notice"
	TypeSuppressed        = "suppressed"
	TypeComplaint         = "complaint"
	TypePaused            = "paused"
	TypeBounceRateWarning = "bounce_rate_warning"
	// TypeTest is `jetrelay webhooks test`'s event.
	TypeTest = "test"
)

// SignatureHeader carries t=<unix>,v1=<hex HMAC-SHA256 of "t.body">.
const SignatureHeader = "Jetrelay-Signature"

// Payload is one event as a webhook receives it: field names follow the
// log's (STYLE.md), message_id is the Message-ID, time is RFC 3339.
type Payload struct {
	Event        string            `json:"event"`
	EventID      string            `json:"event_id"`
	Time         string            `json:"time"`
	QueueID      string            `json:"queue_id,omitempty"`
	MessageID    string            `json:"message_id,omitempty"`
	Meta         map[string]string `json:"meta,omitempty"`
	Tag          string            `json:"tag,omitempty"`
	User         string            `json:"user,omitempty"`
	MailFrom     *string           `json:"mail_from,omitempty"`
	Rcpt         string            `json:"rcpt,omitempty"`
	Domain       string            `json:"domain,omitempty"`
	Status       string            `json:"status,omitempty"`
	SMTPCode     int               `json:"smtp_code,omitempty"`
	SMTPEnh      string            `json:"smtp_enh,omitempty"`
	Reply        string            `json:"reply,omitempty"`
	Reason       string            `json:"reason,omitempty"`
	MX           string            `json:"mx,omitempty"`
	IP           string            `json:"ip,omitempty"`
	TLS          string            `json:"tls,omitempty"`
	Attempt      int               `json:"attempt,omitempty"`
	NextAttempt  string            `json:"next_attempt,omitempty"`
	FeedbackType string            `json:"feedback_type,omitempty"`
}

// TypeOf maps a stored event to its webhook event type, or "" for events
// no webhook receives (accepted, rejected, operator actions, ...).
func TypeOf(e *events.Event) string {
	switch e.Event {
	case events.Delivery:
		switch e.Status {
		case events.StatusDelivered, events.StatusRelayed:
			return TypeDelivered
		case events.StatusDeferred:
			return TypeDeferred
		case events.StatusFailed:
			return TypeFailed
		}
	case events.DSN:
		// relay/bounce queues a DSN with status queued and the action as
		// reason; the delayed action is the delay notice (RFC 3464 §2.3.3).
		if e.Status == "queued" && e.Reason == "delayed" {
			return TypeDelayNotice
		}
	case events.Bounced:
		return TypeBounced
	case events.Suppressed:
		return TypeSuppressed
	case events.Complaint:
		return TypeComplaint
	case events.Paused:
		return TypePaused
	case events.BounceRateWarning:
		return TypeBounceRateWarning
	}
	return ""
}

// kindsOf are the stored event kinds (subject tokens) behind webhook types.
var kindsOf = map[string]string{
	TypeDelivered: events.Delivery, TypeDeferred: events.Delivery, TypeFailed: events.Delivery,
	TypeBounced: events.Bounced, TypeDelayNotice: events.DSN, TypeSuppressed: events.Suppressed,
	TypeComplaint: events.Complaint, TypePaused: events.Paused, TypeBounceRateWarning: events.BounceRateWarning,
}

// AllTypes are the webhook event types in config order.
var AllTypes = []string{TypeDelivered, TypeDeferred, TypeFailed, TypeBounced, TypeDelayNotice,
	TypeSuppressed, TypeComplaint, TypePaused, TypeBounceRateWarning}

// FilterSubjects are the events-stream subjects holding the types: the
// consumer's server-side filter (jr.ev.<kind>.>).
func FilterSubjects(types []string) []string {
	if len(types) == 0 {
		types = AllTypes
	}
	var out []string
	for _, t := range types {
		s := events.SubjPrefix + "." + kindsOf[t] + ".>"
		if kindsOf[t] != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out
}

// EventID is an event's stable id for de-duplication: its stream sequence
// and the time the stream stored it (the pair survives redelivery and
// replay, and differs if the stream is ever recreated).
func EventID(seq uint64, stored time.Time) string {
	return strconv.FormatUint(seq, 10) + "-" + strconv.FormatInt(stored.UnixNano(), 36)
}

// NewPayload builds the payload of a stored event of webhook type typ.
func NewPayload(typ string, r events.Record) Payload {
	e := r.Event
	p := Payload{
		Event: typ, EventID: EventID(r.Seq, r.Time), Time: e.Time.UTC().Format(time.RFC3339Nano),
		QueueID: e.QueueID, MessageID: e.MsgID, Meta: e.Meta, Tag: e.Tag, User: e.User, MailFrom: e.MailFrom,
		Rcpt: e.Rcpt, Domain: e.Domain, Status: e.Status, SMTPCode: e.SMTPCode, SMTPEnh: e.SMTPEnh,
		Reply: e.Reply, Reason: e.Reason, MX: e.MX, IP: e.IP, TLS: e.TLS, Attempt: e.Attempt,
		FeedbackType: e.FeedbackType,
	}
	if e.NextAttempt != nil {
		p.NextAttempt = e.NextAttempt.UTC().Format(time.RFC3339)
	}
	if typ == TypeDelayNotice {
		// The DSN event's rcpt is the envelope sender the notice went to.
		p.MailFrom, p.Rcpt, p.Status, p.Reason = events.Str(e.Rcpt), "", "", ""
	}
	return p
}

// Sign returns the Jetrelay-Signature header value of body at time t:
// t=<unix seconds>,v1=<hex HMAC-SHA256 over "<t>.<body>">.
func Sign(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return fmt.Sprintf("t=%s,v1=%s", ts, hex.EncodeToString(m.Sum(nil)))
}

// Verify checks a Jetrelay-Signature header value against body; a
// receiver's side of Sign (used by tests and documented for applications).
func Verify(secret []byte, header string, body []byte) bool {
	var ts, v1 string
	for len(header) > 0 {
		var part string
		part, header, _ = strings.Cut(header, ",")
		k, v, _ := strings.Cut(part, "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			v1 = v
		}
	}
	n, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || v1 == "" {
		return false
	}
	want := Sign(secret, time.Unix(n, 0), body)
	return hmac.Equal([]byte(want), []byte("t="+ts+",v1="+v1))
}
