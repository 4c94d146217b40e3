package deliver

import (
	"context"
	"errors"
	"regexp"
	"strings"

	"github.com/emersion/go-smtp"
	"github.com/jetrelay/jetrelay/queue"
)

// transaction is one message to send to one host: the entry's pending
// recipients (or, under VERP, one of them), the envelope sender to use on
// the wire and the body.
type transaction struct {
	env   *queue.Envelope
	from  string
	rcpts []queue.Recipient
	body  []byte
}

// transact runs one mail transaction (RFC 5321 §3.3) and returns one reply
// per recipient, in order. An error means the connection failed before a
// verdict (dropped, timed out, 421): no recipient is settled by it.
func (s *session) transact(ctx context.Context, m *transaction, to timeouts) ([]Reply, error) {
	if m.env.RequireTLS && (s.tls == nil || !s.verified || !s.ext.requireTLS) {
		return nil, newError(replyRequireTLS, true, nil) // RFC 8689 §4.2.1
	}
	body, fail := s.prepare(m)
	if fail != nil {
		return fill(len(m.rcpts), *fail), nil
	}
	stop := context.AfterFunc(ctx, s.close)
	defer stop()
	if s.canPipeline(m) {
		return s.pipelined(m, body, to)
	}
	c := s.c
	if s.dirty {
		c.CommandTimeout = to.mail
		if err := c.Reset(); err != nil {
			return nil, err
		}
	}
	s.dirty = true
	c.CommandTimeout = to.mail
	if err := c.Mail(m.from, s.mailOptions(m.env, len(body))); err != nil {
		v := Classify(err)
		if v.NextHost {
			return nil, err
		}
		s.dirty = false // a refused MAIL opens no transaction (RFC 5321 §3.3)
		return fill(len(m.rcpts), v.Reply), nil
	}
	replies, accepted, err := s.rcpts(m.rcpts, to)
	if err != nil || accepted == 0 {
		return replies, err
	}
	final, err := s.data(body, to)
	if err != nil {
		return nil, err
	}
	if final.OK() {
		s.sent++
	}
	for i := range replies {
		if replies[i].OK() {
			replies[i] = final
		}
	}
	return replies, nil
}

// prepare checks what the server offers against what the message needs:
// SMTPUTF8 (RFC 6531 §3.4 → 5.6.7), 8BITMIME (convert, else 5.6.3), SIZE.
func (s *session) prepare(m *transaction) ([]byte, *Reply) {
	if m.env.SMTPUTF8 && !s.ext.utf8 {
		return nil, &replySMTPUTF8
	}
	body := m.body
	if !s.ext.eightBit && (m.env.Body8Bit || has8bit(body)) {
		conv, ok := toSevenBit(body)
		if !ok {
			return nil, &replyNo8Bit
		}
		body = conv
	}
	if s.ext.size > 0 && int64(len(body)) > s.ext.size {
		return nil, &replyTooBig
	}
	return body, nil
}

func (s *session) mailOptions(env *queue.Envelope, size int) *smtp.MailOptions {
	o := &smtp.MailOptions{Size: int64(size), UTF8: env.SMTPUTF8, RequireTLS: env.RequireTLS}
	if s.ext.dsn { // RFC 3461 §4.3, §4.4: only to a server that offers DSN
		switch strings.ToUpper(env.Ret) {
		case "FULL":
			o.Return = smtp.DSNReturnFull
		case "HDRS":
			o.Return = smtp.DSNReturnHeaders
		}
		o.EnvelopeID = env.EnvID
	}
	return o
}

// rcpts sends RCPT for each recipient and keeps each reply (RFC 5321 §4.1.1.3).
func (s *session) rcpts(rcpts []queue.Recipient, to timeouts) ([]Reply, int, error) {
	replies := make([]Reply, len(rcpts))
	accepted := 0
	s.c.CommandTimeout = to.rcpt
	for i, r := range rcpts {
		err := s.c.Rcpt(r.Addr, s.rcptOptions(r))
		if err == nil {
			replies[i] = Reply{Code: 250, Enh: "2.1.5", Text: "recipient ok"}
			accepted++
			continue
		}
		var se *smtp.SMTPError
		if !errors.As(err, &se) {
			if _, isNet := transportReply(err); isNet {
				return nil, 0, err
			}
			// go-smtp refused the parameters before sending anything.
			replies[i] = withCause(replyBadRecipient, err.Error())
			continue
		}
		v := Classify(err)
		if v.NextHost {
			return nil, 0, err
		}
		replies[i] = v.Reply
	}
	return replies, accepted, nil
}

func (s *session) rcptOptions(r queue.Recipient) *smtp.RcptOptions {
	if !s.ext.dsn || (len(r.Notify) == 0 && r.ORCPT == "") {
		return nil
	}
	o := &smtp.RcptOptions{}
	for _, n := range r.Notify {
		o.Notify = append(o.Notify, smtp.DSNNotify(strings.ToUpper(n)))
	}
	if typ, addr, ok := strings.Cut(r.ORCPT, ";"); ok {
		switch strings.ToLower(typ) {
		case "rfc822":
			o.OriginalRecipientType, o.OriginalRecipient = smtp.DSNAddressTypeRFC822, addr
		case "utf-8":
			o.OriginalRecipientType, o.OriginalRecipient = smtp.DSNAddressTypeUTF8, addr
		}
	}
	return o
}

// data sends DATA, the body (under the per-write block timeout) and the
// final dot; it returns the final reply, or an error for a connection
// failure. A 4xx/5xx final reply is a verdict, not an error.
func (s *session) data(body []byte, to timeouts) (Reply, error) {
	s.c.CommandTimeout = to.dataInit
	w, err := s.c.Data()
	if err != nil {
		if v := Classify(err); !v.NextHost {
			return v.Reply, nil
		}
		return Reply{}, err
	}
	if _, err := w.Write(body); err != nil {
		return Reply{}, err
	}
	s.c.SubmissionTimeout = to.dataFinal
	resp, err := w.CloseWithResponse()
	if err != nil {
		if v := Classify(err); !v.NextHost {
			s.dirty = false
			return v.Reply, nil
		}
		return Reply{}, err
	}
	s.dirty = false
	return okReply(resp.StatusText), nil
}

var enhRE = regexp.MustCompile(`^[245]\.\d{1,3}\.\d{1,3}$`)

// okReply parses "2.0.0 OK queued as X" into a 250 reply.
func okReply(text string) Reply {
	r := Reply{Code: 250, Text: text}
	if first, rest, ok := strings.Cut(text, " "); ok && enhRE.MatchString(first) {
		r.Enh, r.Text = first, rest
	}
	return r
}

func fill(n int, r Reply) []Reply {
	out := make([]Reply, n)
	for i := range out {
		out[i] = r
	}
	return out
}
