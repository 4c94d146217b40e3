package queue

import (
	"bytes"
	"encoding/json"
	"strconv"
	"sync"

	"github.com/jetrelay/jetrelay/relay/jsonwire"
)

// The envelope's JSON (the Jr-Env header) is written and read without
// reflection: every entry is encoded at enqueue and at every deferral, and
// decoded at every lease. Marshal writes exactly what json.Marshal writes
// (TestEnvelopeMarshalMatchesJSON, FuzzEnvelopeCodec); decodeEnvelope reads
// that shape and hands anything else to encoding/json, so an odd header
// gets encoding/json's answer.

// envelopeBufs are Marshal's scratch buffers (one grown past
// maxPooledEnvelope, by a long recipient list or meta map, is dropped).
var envelopeBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

const maxPooledEnvelope = 16 << 10

// Marshal encodes the envelope for the Jr-Env header (json.Marshal's
// bytes; a time json.Marshal refuses is its error).
func (e *Envelope) Marshal() ([]byte, error) {
	bp := envelopeBufs.Get().(*[]byte)
	b, err := e.appendJSON((*bp)[:0])
	if err != nil {
		envelopeBufs.Put(bp)
		return json.Marshal(e)
	}
	out := bytes.Clone(b)
	if cap(b) <= maxPooledEnvelope {
		*bp = b
		envelopeBufs.Put(bp)
	}
	return out, nil
}

func (e *Envelope) appendJSON(b []byte) ([]byte, error) {
	var err error
	b = jsonwire.AppendString(append(b, `{"id":`...), e.ID)
	b = strField(b, "msg_id", e.MsgID)
	b = jsonwire.AppendString(append(b, `,"from":`...), e.From)
	b = jsonwire.AppendString(append(b, `,"domain":`...), e.Domain)
	b = append(b, `,"rcpts":`...)
	if e.Rcpts == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i := range e.Rcpts {
			if i > 0 {
				b = append(b, ',')
			}
			b = e.Rcpts[i].appendJSON(b)
		}
		b = append(b, ']')
	}
	b = strField(b, "user", e.User)
	if b, err = jsonwire.AppendTime(append(b, `,"arrival":`...), e.Arrival); err != nil {
		return nil, err
	}
	b = intField(b, "attempt", int64(e.Attempt))
	// omitempty does nothing for a struct such as time.Time: always there.
	if b, err = jsonwire.AppendTime(append(b, `,"next_at":`...), e.NextAt); err != nil {
		return nil, err
	}
	b = strField(b, "ret", e.Ret)
	b = strField(b, "envid", e.EnvID)
	b = boolField(b, "requiretls", e.RequireTLS)
	b = boolField(b, "smtputf8", e.SMTPUTF8)
	b = boolField(b, "body_8bit", e.Body8Bit)
	b = strconv.AppendInt(append(b, `,"size":`...), e.Size, 10)
	b = intField(b, "chunks", int64(e.Chunks))
	b = boolField(b, "is_dsn", e.IsDSN)
	b = boolField(b, "delay_notified", e.DelayNotified)
	b = e.LastReply.appendJSON(append(b, `,"last_reply":`...))
	b = boolField(b, "held", e.Held)
	b = boolField(b, "probe", e.Probe)
	if !e.Retried.IsZero() {
		if b, err = jsonwire.AppendTime(append(b, `,"retried":`...), e.Retried); err != nil {
			return nil, err
		}
	}
	b = strField(b, "waiting", e.Waiting)
	if len(e.Meta) > 0 {
		b = jsonwire.AppendStringMap(append(b, `,"meta":`...), e.Meta)
	}
	b = strField(b, "tag", e.Tag)
	b = boolField(b, "tls_report", e.TLSReport)
	return append(b, '}'), nil
}

func (r *Recipient) appendJSON(b []byte) []byte {
	b = jsonwire.AppendString(append(b, `{"addr":`...), r.Addr)
	if len(r.Notify) > 0 {
		b = jsonwire.AppendStrings(append(b, `,"notify":`...), r.Notify)
	}
	b = strField(b, "orcpt", r.ORCPT)
	return append(b, '}')
}

func (r *Reply) appendJSON(b []byte) []byte {
	n := len(b)
	b = intField(b, "code", int64(r.Code))
	b = strField(b, "enh", r.Enh)
	b = strField(b, "text", r.Text)
	b = strField(b, "mx", r.MX)
	if len(b) == n {
		return append(b, "{}"...)
	}
	b[n] = '{' // the first field's comma
	return append(b, '}')
}

// strField appends ,"name":"v" unless v is empty (omitempty).
func strField(b []byte, name, v string) []byte {
	if v == "" {
		return b
	}
	return jsonwire.AppendString(append(append(append(b, `,"`...), name...), `":`...), v)
}

func intField(b []byte, name string, v int64) []byte {
	if v == 0 {
		return b
	}
	return strconv.AppendInt(append(append(append(b, `,"`...), name...), `":`...), v, 10)
}

func boolField(b []byte, name string, v bool) []byte {
	if !v {
		return b
	}
	return append(append(append(b, `,"`...), name...), `":true`...)
}

// decodeEnvelope reads a Jr-Env value into e (reset first) as
// json.Unmarshal does.
func decodeEnvelope(data []byte, e *Envelope) error {
	*e = Envelope{}
	d := envReader{Reader: jsonwire.NewReader(data)}
	if d.envelope(e) {
		return nil
	}
	var full Envelope // apart from e, so that e does not escape on the fast path
	if err := json.Unmarshal(data, &full); err != nil {
		return err
	}
	*e = full
	return nil
}

// envReader reads the shape appendJSON writes; false: anything else.
type envReader struct {
	jsonwire.Reader
}

// object reads {"key":value,...}, each key once (seen is the keys'
// bits, as key returns them; a key it does not know is false).
func (d *envReader) object(key func(k []byte) (bit uint64, ok bool)) bool {
	var seen uint64
	return d.Object(func(k []byte, esc bool) bool {
		if esc {
			return false
		}
		bit, ok := key(k)
		if !ok || seen&bit != 0 {
			return false
		}
		seen |= bit
		return true
	})
}

func (d *envReader) int(dst *int) bool {
	v, ok := d.Int()
	if ok && int64(int(v)) == v {
		*dst = int(v)
		return true
	}
	return false
}

func (d *envReader) bool(dst *bool) bool {
	v, ok := d.Bool()
	*dst = v
	return ok
}

func (d *envReader) envelope(e *Envelope) bool {
	ok := d.object(func(k []byte) (uint64, bool) {
		switch string(k) {
		case "id":
			return 1 << 0, d.String(true, &e.ID)
		case "msg_id":
			return 1 << 1, d.String(true, &e.MsgID)
		case "from":
			return 1 << 2, d.String(true, &e.From)
		case "domain":
			return 1 << 3, d.String(true, &e.Domain)
		case "rcpts":
			return 1 << 4, d.recipients(&e.Rcpts)
		case "user":
			return 1 << 5, d.String(true, &e.User)
		case "arrival":
			return 1 << 6, d.Time(&e.Arrival)
		case "attempt":
			return 1 << 7, d.int(&e.Attempt)
		case "next_at":
			return 1 << 8, d.Time(&e.NextAt)
		case "ret":
			return 1 << 9, d.String(true, &e.Ret)
		case "envid":
			return 1 << 10, d.String(true, &e.EnvID)
		case "requiretls":
			return 1 << 11, d.bool(&e.RequireTLS)
		case "smtputf8":
			return 1 << 12, d.bool(&e.SMTPUTF8)
		case "body_8bit":
			return 1 << 13, d.bool(&e.Body8Bit)
		case "size":
			v, ok := d.Int()
			e.Size = v
			return 1 << 14, ok
		case "chunks":
			return 1 << 15, d.int(&e.Chunks)
		case "is_dsn":
			return 1 << 16, d.bool(&e.IsDSN)
		case "delay_notified":
			return 1 << 17, d.bool(&e.DelayNotified)
		case "last_reply":
			return 1 << 18, d.reply(&e.LastReply)
		case "held":
			return 1 << 19, d.bool(&e.Held)
		case "probe":
			return 1 << 20, d.bool(&e.Probe)
		case "retried":
			return 1 << 21, d.Time(&e.Retried)
		case "waiting":
			return 1 << 22, d.String(true, &e.Waiting)
		case "meta":
			return 1 << 23, d.StringMap(true, &e.Meta)
		case "tag":
			return 1 << 24, d.String(true, &e.Tag)
		case "tls_report":
			return 1 << 25, d.bool(&e.TLSReport)
		}
		return 0, false
	})
	return ok && d.End()
}

func (d *envReader) recipients(dst *[]Recipient) bool {
	if d.Literal("null") { // what Marshal writes for none; json.Unmarshal leaves nil
		return true
	}
	out := []Recipient{}
	ok := d.Array(func() bool {
		var r Recipient
		if !d.object(func(k []byte) (uint64, bool) {
			switch string(k) {
			case "addr":
				return 1 << 0, d.String(true, &r.Addr)
			case "notify":
				return 1 << 1, d.Strings(true, &r.Notify)
			case "orcpt":
				return 1 << 2, d.String(true, &r.ORCPT)
			}
			return 0, false
		}) {
			return false
		}
		out = append(out, r)
		return true
	})
	if ok {
		*dst = out
	}
	return ok
}

func (d *envReader) reply(r *Reply) bool {
	return d.object(func(k []byte) (uint64, bool) {
		switch string(k) {
		case "code":
			return 1 << 0, d.int(&r.Code)
		case "enh":
			return 1 << 1, d.String(true, &r.Enh)
		case "text":
			return 1 << 2, d.String(true, &r.Text)
		case "mx":
			return 1 << 3, d.String(true, &r.MX)
		}
		return 0, false
	})
}
