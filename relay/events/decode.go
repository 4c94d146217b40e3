package events

import (
	"encoding/json"
	"reflect"
	"time"

	"github.com/jetrelay/jetrelay/relay/jsonwire"
)

// FieldMask selects the fields of an Event that Decode fills, one bit each
// (named after the Go fields). Every reader of the events stream decodes
// every event, so each takes only what it uses: the others are checked
// for their type but not copied.
type FieldMask uint64

// The field bits, in the order of Event's fields.
const (
	FTime FieldMask = 1 << iota
	FEvent
	FQueueID
	FMsgID
	FConnID
	FRemoteAddr
	FUser
	FMailFrom
	FRcpt
	FRcpts
	FRcptCount
	FDomain
	FSize
	FMX
	FIP
	FSource
	FPort
	FTLS
	FTLSPolicy
	FTLSFailure
	FTLSCipher
	FTLSVerified
	FDKIM
	FAttempt
	FStatus
	FSMTPCode
	FSMTPEnh
	FReply
	FReason
	FDurationMS
	FNextAttempt
	FDSNID
	FActor
	FArrival
	FProvider
	FRule
	FAction
	FUntil
	FMeta
	FTag
	FFeedbackType
	fieldsEnd

	// AllFields is every field: Decode is then json.Unmarshal.
	AllFields = fieldsEnd - 1
)

// Decode reads the JSON event data into e (reset first), filling the
// fields in want; the result and whether it fails are those of
// json.Unmarshal into an Event, restricted to want.
//
// It is the reflection-free reader of what Marshal writes: one pass, no
// allocation but the wanted strings (and their slice, map and pointers).
// A document outside that shape — a key Event's tags do not spell
// exactly (encoding/json matches keys without regard to case), a key
// twice, a null, a number that is not a plain integer, trailing bytes, a
// syntax error — is handed to encoding/json, whose answer it returns.
func Decode(data []byte, e *Event, want FieldMask) error {
	*e = Event{}
	if decodeFast(data, e, want) {
		return nil
	}
	var full Event // apart from e, so that e does not escape on the fast path
	if err := json.Unmarshal(data, &full); err != nil {
		*e = Event{}
		return err
	}
	full.keep(want)
	*e = full
	return nil
}

// decodeFast is Decode's own reader; false: not its shape (e then holds
// anything).
func decodeFast(data []byte, e *Event, want FieldMask) bool {
	d := decoder{Reader: jsonwire.NewReader(data), want: want, e: e}
	return d.object()
}

// keep zeroes the fields not in want (bit i is field i of Event,
// TestDecodeFieldBits holds that; only encoding/json's path comes here).
func (e *Event) keep(want FieldMask) {
	v := reflect.ValueOf(e).Elem()
	for i := range v.NumField() {
		if want&(1<<i) == 0 {
			v.Field(i).SetZero()
		}
	}
}

// decoder is one pass over an event; any method returning false means
// "not the shape this reader takes" (encoding/json decides then).
type decoder struct {
	jsonwire.Reader
	want FieldMask
	seen FieldMask
	e    *Event
}

func (d *decoder) object() bool {
	return d.Object(func(key []byte, esc bool) bool { return !esc && d.field(key) }) && d.End()
}

// take marks bit seen (a repeated key is not taken) and says whether the
// value is wanted.
func (d *decoder) take(bit FieldMask) (wanted, ok bool) {
	if d.seen&bit != 0 {
		return false, false
	}
	d.seen |= bit
	return d.want&bit != 0, true
}

func (d *decoder) field(key []byte) bool {
	e := d.e
	switch string(key) {
	case "time":
		return d.timeField(FTime, func(t time.Time) { e.Time = t })
	case "event":
		return d.stringField(FEvent, &e.Event)
	case "queue_id":
		return d.stringField(FQueueID, &e.QueueID)
	case "msg_id":
		return d.stringField(FMsgID, &e.MsgID)
	case "conn_id":
		return d.stringField(FConnID, &e.ConnID)
	case "remote_addr":
		return d.stringField(FRemoteAddr, &e.RemoteAddr)
	case "user":
		return d.stringField(FUser, &e.User)
	case "mail_from":
		var s string
		w, ok := d.take(FMailFrom)
		if !ok || !d.String(w, &s) {
			return false
		}
		if w {
			e.MailFrom = &s
		}
		return true
	case "rcpt":
		return d.stringField(FRcpt, &e.Rcpt)
	case "rcpts":
		return d.stringsField(FRcpts, &e.Rcpts)
	case "rcpt_count":
		return d.intField(FRcptCount, func(v int64) { e.RcptCount = int(v) })
	case "domain":
		return d.stringField(FDomain, &e.Domain)
	case "size":
		return d.intField(FSize, func(v int64) { e.Size = v })
	case "mx":
		return d.stringField(FMX, &e.MX)
	case "ip":
		return d.stringField(FIP, &e.IP)
	case "source":
		return d.stringField(FSource, &e.Source)
	case "port":
		return d.intField(FPort, func(v int64) { e.Port = int(v) })
	case "tls":
		return d.stringField(FTLS, &e.TLS)
	case "tls_policy":
		return d.stringField(FTLSPolicy, &e.TLSPolicy)
	case "tls_failure":
		return d.stringField(FTLSFailure, &e.TLSFailure)
	case "tls_cipher":
		return d.stringField(FTLSCipher, &e.TLSCipher)
	case "tls_verified":
		w, ok := d.take(FTLSVerified)
		if !ok {
			return false
		}
		v, ok := d.Bool()
		if !ok {
			return false
		}
		if w {
			e.TLSVerified = &v
		}
		return true
	case "dkim":
		return d.stringField(FDKIM, &e.DKIM)
	case "attempt":
		return d.intField(FAttempt, func(v int64) { e.Attempt = int(v) })
	case "status":
		return d.stringField(FStatus, &e.Status)
	case "smtp_code":
		return d.intField(FSMTPCode, func(v int64) { e.SMTPCode = int(v) })
	case "smtp_enh":
		return d.stringField(FSMTPEnh, &e.SMTPEnh)
	case "reply":
		return d.stringField(FReply, &e.Reply)
	case "reason":
		return d.stringField(FReason, &e.Reason)
	case "duration_ms":
		return d.intField(FDurationMS, func(v int64) { e.DurationMS = v })
	case "next_attempt":
		return d.timeField(FNextAttempt, func(t time.Time) { e.NextAttempt = &t })
	case "dsn_id":
		return d.stringField(FDSNID, &e.DSNID)
	case "actor":
		return d.stringField(FActor, &e.Actor)
	case "arrival":
		return d.timeField(FArrival, func(t time.Time) { e.Arrival = t })
	case "provider":
		return d.stringField(FProvider, &e.Provider)
	case "rule":
		return d.stringField(FRule, &e.Rule)
	case "action":
		return d.stringField(FAction, &e.Action)
	case "until":
		return d.timeField(FUntil, func(t time.Time) { e.Until = &t })
	case "meta":
		return d.metaField()
	case "tag":
		return d.stringField(FTag, &e.Tag)
	case "feedback_type":
		return d.stringField(FFeedbackType, &e.FeedbackType)
	}
	return false
}

func (d *decoder) stringField(bit FieldMask, dst *string) bool {
	w, ok := d.take(bit)
	return ok && d.String(w, dst)
}

func (d *decoder) stringsField(bit FieldMask, dst *[]string) bool {
	w, ok := d.take(bit)
	return ok && d.Strings(w, dst)
}

func (d *decoder) metaField() bool {
	w, ok := d.take(FMeta)
	return ok && d.StringMap(w, &d.e.Meta)
}

// intField reads a plain JSON integer (no fraction or exponent) that fits
// 64 bits; set receives it when wanted.
func (d *decoder) intField(bit FieldMask, set func(int64)) bool {
	w, ok := d.take(bit)
	if !ok {
		return false
	}
	v, ok := d.Int()
	if !ok {
		return false
	}
	if w {
		set(v)
	}
	return true
}

// timeField reads a time as encoding/json does: the quoted token to
// time.Time's UnmarshalJSON (which checks it whether wanted or not); set
// receives it when wanted.
func (d *decoder) timeField(bit FieldMask, set func(time.Time)) bool {
	w, ok := d.take(bit)
	if !ok {
		return false
	}
	var t time.Time
	if !d.Time(&t) {
		return false
	}
	if w {
		set(t)
	}
	return true
}
