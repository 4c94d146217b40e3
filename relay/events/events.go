// Package events owns jetrelay's lifecycle events: one Event type whose
// fields are the log line's fields, and the Emitter that writes each event
// as one zerolog line and (when a Publisher is attached) publishes it to the
// events stream. Emitting never blocks or fails the caller's work.
package events

import (
	"maps"
	"slices"
	"time"

	"github.com/rs/zerolog"
)

// Event kinds.
const (
	Accepted     = "accepted"
	Rejected     = "rejected"
	Delivery     = "delivery"
	DSN          = "dsn"
	Bounced      = "bounced"
	Suppressed   = "suppressed"
	Unsuppressed = "unsuppressed"
	Expired      = "expired"
	Deleted      = "deleted"
	Held         = "held"
	Released     = "released"
	Retried      = "retried" // an operator made a deferred entry due now
	Shaping      = "shaping" // a provider's suspension or rate change began or ended
	// Complaint is an ARF feedback report (RFC 5965) about a message.
	Complaint = "complaint"
	// BounceRateWarning and Paused come from a user's bounce-rate guard;
	// Resumed is an operator lifting a pause (jetrelay user resume).
	BounceRateWarning = "bounce_rate_warning"
	Paused            = "paused"
	Resumed           = "resumed"
)

// Delivery statuses.
const (
	StatusDelivered = "delivered"
	StatusDeferred  = "deferred"
	StatusFailed    = "failed"
	StatusRelayed   = "relayed"
)

// Event is one lifecycle event. JSON names are the fixed log field names
// (STYLE.md); empty fields are left out.
type Event struct {
	Time       time.Time `json:"time"`
	Event      string    `json:"event"`
	QueueID    string    `json:"queue_id,omitempty"`
	MsgID      string    `json:"msg_id,omitempty"`
	ConnID     string    `json:"conn_id,omitempty"`
	RemoteAddr string    `json:"remote_addr,omitempty"`
	User       string    `json:"user,omitempty"`
	MailFrom   *string   `json:"mail_from,omitempty"` // pointer: "" (null sender) is meaningful
	Rcpt       string    `json:"rcpt,omitempty"`
	// Rcpts lists an accepted message's recipients (at most
	// submission.max_recipients), so a search finds a message by
	// recipient before its first delivery attempt.
	Rcpts     []string `json:"rcpts,omitempty"`
	RcptCount int      `json:"rcpt_count,omitempty"`
	Domain    string   `json:"domain,omitempty"`
	Size      int64    `json:"size,omitempty"`
	MX        string   `json:"mx,omitempty"`
	IP        string   `json:"ip,omitempty"`
	Source    string   `json:"source,omitempty"` // egress source of a delivery's connection
	Port      int      `json:"port,omitempty"`
	TLS       string   `json:"tls,omitempty"`        // version, "none" or "failed"
	TLSPolicy string   `json:"tls_policy,omitempty"` // dane, mta-sts, mta-sts-testing, configured, opportunistic, none (DESIGN-NOTES)
	// TLSFailure is the TLS-RPT result type (RFC 8460 §4.3) of a failed or
	// (under a testing policy) unmet TLS policy.
	TLSFailure  string     `json:"tls_failure,omitempty"`
	TLSCipher   string     `json:"tls_cipher,omitempty"`
	TLSVerified *bool      `json:"tls_verified,omitempty"`
	DKIM        string     `json:"dkim,omitempty"`
	Attempt     int        `json:"attempt,omitempty"`
	Status      string     `json:"status,omitempty"`
	SMTPCode    int        `json:"smtp_code,omitempty"`
	SMTPEnh     string     `json:"smtp_enh,omitempty"`
	Reply       string     `json:"reply,omitempty"`
	Reason      string     `json:"reason,omitempty"`
	DurationMS  int64      `json:"duration_ms,omitempty"`
	NextAttempt *time.Time `json:"next_attempt,omitempty"`
	DSNID       string     `json:"dsn_id,omitempty"` // queue id of a generated DSN
	Actor       string     `json:"actor,omitempty"`  // who made an operator change
	// Arrival is when the message was accepted (delivery events): the
	// accept → delivered latency is Time - Arrival.
	Arrival time.Time `json:"arrival,omitzero"`
	// Shaping events: the provider, the rule (or "backoff", "operator"),
	// the action (suspend, rate, backoff) and when it ends.
	Provider string     `json:"provider,omitempty"`
	Rule     string     `json:"rule,omitempty"`
	Action   string     `json:"action,omitempty"`
	Until    *time.Time `json:"until,omitempty"`
	// Meta and Tag are the application's X-Jetrelay-Meta-<key> and
	// X-Jetrelay-Tag values, carried on every event of the message.
	Meta map[string]string `json:"meta,omitempty"`
	Tag  string            `json:"tag,omitempty"`
	// FeedbackType is a complaint's ARF Feedback-Type (abuse, fraud, ...).
	FeedbackType string `json:"feedback_type,omitempty"`
}

// Str returns a pointer to s, for MailFrom.
func Str(s string) *string { return &s }

// Bool returns a pointer to b, for TLSVerified.
func Bool(b bool) *bool { return &b }

// Publisher sends events to the events stream. Publish must not block for
// long and reports failures through its own logging and counters.
type Publisher interface {
	Publish(e *Event)
}

// Emitter writes every event as a log line and hands it to the publisher.
type Emitter struct {
	log zerolog.Logger
	pub Publisher
}

// NewEmitter returns an emitter logging to log; pub may be nil.
func NewEmitter(log zerolog.Logger, pub Publisher) *Emitter {
	return &Emitter{log: log, pub: pub}
}

// Emit logs e (level by outcome) and publishes it.
func (em *Emitter) Emit(e *Event) {
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	lvl := zerolog.InfoLevel
	switch {
	case e.Event == Rejected, e.Status == StatusDeferred:
		lvl = zerolog.WarnLevel
	case e.Status == StatusFailed:
		lvl = zerolog.ErrorLevel
	}
	ev := em.log.WithLevel(lvl)
	if ev != nil {
		Fields(ev, e).Send()
	}
	if em.pub != nil {
		em.pub.Publish(e)
	}
}

// Fields adds e's fields to a zerolog event under the fixed names.
func Fields(z *zerolog.Event, e *Event) *zerolog.Event {
	w := fieldWriter{z.Str("event", e.Event)}
	w.str("queue_id", e.QueueID)
	w.str("msg_id", e.MsgID)
	w.str("conn_id", e.ConnID)
	w.str("remote_addr", e.RemoteAddr)
	w.str("user", e.User)
	if e.MailFrom != nil {
		w.z = w.z.Str("mail_from", *e.MailFrom)
	}
	w.str("rcpt", e.Rcpt)
	if len(e.Rcpts) > 0 {
		w.z = w.z.Strs("rcpts", e.Rcpts)
	}
	w.num("rcpt_count", int64(e.RcptCount))
	w.str("domain", e.Domain)
	w.num("size", e.Size)
	w.delivery(e)
	w.str("dsn_id", e.DSNID)
	w.str("actor", e.Actor)
	w.time("arrival", e.Arrival, time.RFC3339Nano)
	w.str("provider", e.Provider)
	w.str("rule", e.Rule)
	w.str("action", e.Action)
	if e.Until != nil {
		w.time("until", *e.Until, time.RFC3339)
	}
	if len(e.Meta) > 0 {
		d := zerolog.Dict()
		for _, k := range slices.Sorted(maps.Keys(e.Meta)) {
			d = d.Str(k, e.Meta[k])
		}
		w.z = w.z.Dict("meta", d)
	}
	w.str("tag", e.Tag)
	w.str("feedback_type", e.FeedbackType)
	return w.z
}

// fieldWriter adds the non-empty fields of an event to a log line.
type fieldWriter struct{ z *zerolog.Event }

func (w *fieldWriter) str(k, v string) {
	if v != "" {
		w.z = w.z.Str(k, v)
	}
}

func (w *fieldWriter) num(k string, v int64) {
	if v != 0 {
		w.z = w.z.Int64(k, v)
	}
}

func (w *fieldWriter) time(k string, t time.Time, layout string) {
	if !t.IsZero() {
		w.z = w.z.Str(k, t.UTC().Format(layout))
	}
}

// delivery adds the fields of a delivery attempt: where, TLS, outcome.
func (w *fieldWriter) delivery(e *Event) {
	w.str("mx", e.MX)
	w.str("ip", e.IP)
	w.str("source", e.Source)
	w.num("port", int64(e.Port))
	w.str("tls", e.TLS)
	w.str("tls_policy", e.TLSPolicy)
	w.str("tls_failure", e.TLSFailure)
	w.str("tls_cipher", e.TLSCipher)
	if e.TLSVerified != nil {
		w.z = w.z.Bool("tls_verified", *e.TLSVerified)
	}
	w.str("dkim", e.DKIM)
	w.num("attempt", int64(e.Attempt))
	w.str("status", e.Status)
	w.num("smtp_code", int64(e.SMTPCode))
	w.str("smtp_enh", e.SMTPEnh)
	w.str("reply", e.Reply)
	w.str("reason", e.Reason)
	if e.DurationMS != 0 || e.Event == Delivery {
		w.z = w.z.Int64("duration_ms", e.DurationMS)
	}
	if e.NextAttempt != nil {
		w.time("next_attempt", *e.NextAttempt, time.RFC3339)
	}
}
