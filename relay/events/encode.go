package events

import (
	"bytes"
	"encoding/json"
	"strconv"
	"sync"
	"time"

	"github.com/jetrelay/jetrelay/relay/jsonwire"
)

// Marshal encodes e exactly as encoding/json does (same fields, order,
// escaping and time format), without reflection: every message publishes
// at least two events, and json.Marshal was the largest CPU cost of the
// relay's own code on the event path (docs/performance.md, "CPU per
// message"). A time json.Marshal would refuse (a year outside 0–9999, a
// zone offset of 24 hours or more) falls back to json.Marshal, which
// returns its error. TestMarshalMatchesJSON and FuzzMarshal hold it to
// json.Marshal's output.
func Marshal(e *Event) ([]byte, error) {
	bp := encodeBufs.Get().(*[]byte)
	b, err := e.appendJSON((*bp)[:0])
	if err != nil {
		encodeBufs.Put(bp)
		return json.Marshal(e)
	}
	out := bytes.Clone(b) // the publish keeps it; the scratch buffer goes back
	if cap(b) <= maxPooledEncode {
		*bp = b
		encodeBufs.Put(bp)
	}
	return out, nil
}

// encodeBufs are Marshal's scratch buffers; one that grew past
// maxPooledEncode (an event with a large meta map) is not kept.
var encodeBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

const maxPooledEncode = 16 << 10

func (e *Event) appendJSON(b []byte) ([]byte, error) {
	var err error
	b = append(b, `{"time":`...)
	if b, err = jsonwire.AppendTime(b, e.Time); err != nil {
		return nil, err
	}
	b = jsonwire.AppendString(append(b, `,"event":`...), e.Event)
	b = field(b, "queue_id", e.QueueID)
	b = field(b, "msg_id", e.MsgID)
	b = field(b, "conn_id", e.ConnID)
	b = field(b, "remote_addr", e.RemoteAddr)
	b = field(b, "user", e.User)
	if e.MailFrom != nil {
		b = jsonwire.AppendString(append(b, `,"mail_from":`...), *e.MailFrom)
	}
	b = field(b, "rcpt", e.Rcpt)
	if len(e.Rcpts) > 0 {
		b = jsonwire.AppendStrings(append(b, `,"rcpts":`...), e.Rcpts)
	}
	b = intField(b, "rcpt_count", int64(e.RcptCount))
	b = field(b, "domain", e.Domain)
	b = intField(b, "size", e.Size)
	b = field(b, "mx", e.MX)
	b = field(b, "ip", e.IP)
	b = field(b, "source", e.Source)
	b = intField(b, "port", int64(e.Port))
	b = field(b, "tls", e.TLS)
	b = field(b, "tls_policy", e.TLSPolicy)
	b = field(b, "tls_failure", e.TLSFailure)
	b = field(b, "tls_cipher", e.TLSCipher)
	if e.TLSVerified != nil {
		b = strconv.AppendBool(append(b, `,"tls_verified":`...), *e.TLSVerified)
	}
	b = field(b, "dkim", e.DKIM)
	b = intField(b, "attempt", int64(e.Attempt))
	b = field(b, "status", e.Status)
	b = intField(b, "smtp_code", int64(e.SMTPCode))
	b = field(b, "smtp_enh", e.SMTPEnh)
	b = field(b, "reply", e.Reply)
	b = field(b, "reason", e.Reason)
	b = intField(b, "duration_ms", e.DurationMS)
	if b, err = timePtrField(b, "next_attempt", e.NextAttempt); err != nil {
		return nil, err
	}
	b = field(b, "dsn_id", e.DSNID)
	b = field(b, "actor", e.Actor)
	if !e.Arrival.IsZero() {
		if b, err = jsonwire.AppendTime(append(b, `,"arrival":`...), e.Arrival); err != nil {
			return nil, err
		}
	}
	return e.appendTail(b)
}

// appendTail encodes the fields after Arrival.
func (e *Event) appendTail(b []byte) ([]byte, error) {
	b = field(b, "provider", e.Provider)
	b = field(b, "rule", e.Rule)
	b = field(b, "action", e.Action)
	b, err := timePtrField(b, "until", e.Until)
	if err != nil {
		return nil, err
	}
	if len(e.Meta) > 0 {
		b = jsonwire.AppendStringMap(append(b, `,"meta":`...), e.Meta)
	}
	b = field(b, "tag", e.Tag)
	b = field(b, "feedback_type", e.FeedbackType)
	return append(b, '}'), nil
}

// field appends ,"name":"v" unless v is empty (omitempty).
func field(b []byte, name, v string) []byte {
	if v == "" {
		return b
	}
	b = append(append(append(b, `,"`...), name...), `":`...)
	return jsonwire.AppendString(b, v)
}

func intField(b []byte, name string, v int64) []byte {
	if v == 0 {
		return b
	}
	b = append(append(append(b, `,"`...), name...), `":`...)
	return strconv.AppendInt(b, v, 10)
}

func timePtrField(b []byte, name string, t *time.Time) ([]byte, error) {
	if t == nil {
		return b, nil
	}
	b = append(append(append(b, `,"`...), name...), `":`...)
	return jsonwire.AppendTime(b, *t)
}
