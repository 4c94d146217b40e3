package smtpclient

import (
	"context"
	"errors"
	"regexp"
	"strings"

	"github.com/emersion/go-smtp"
)

// Message is one mail transaction to run: the reverse-path to use on the
// wire, the recipients with their DSN parameters, the body and what the
// body needs from the server. It knows nothing of the queue: relay/deliver
// builds it from an entry.
type Message struct {
	From  string // reverse-path; "" is the null reverse-path
	Rcpts []Recipient
	Body  []byte
	// RFC 3461 DSN parameters: RET (FULL | HDRS) and ENVID.
	Ret, EnvID string
	RequireTLS bool // RFC 8689: only over authenticated TLS to a REQUIRETLS server
	SMTPUTF8   bool // RFC 6531
	Body8Bit   bool // BODY=8BITMIME was declared (8-bit bytes are also detected)
}

// Recipient is one forward-path with its RFC 3461 parameters.
type Recipient struct {
	Addr   string
	Notify []string // NEVER | SUCCESS, FAILURE, DELAY; empty: the server's default
	ORCPT  string   // "rfc822;user@example.com"
}

// transact runs one mail transaction (RFC 5321 §3.3) and returns one reply
// per recipient, in order. An error means the connection failed before a
// verdict (dropped, timed out, 421): no recipient is settled by it.
func (s *Session) transact(ctx context.Context, m *Message, to Timeouts) ([]Reply, error) {
	if m.RequireTLS && (s.tls == nil || !s.verified || !s.ext.requireTLS) {
		return nil, newError(replyRequireTLS, true, nil) // RFC 8689 §4.2.1
	}
	body, fail := s.prepare(m)
	if fail != nil {
		return fill(len(m.Rcpts), *fail), nil
	}
	stop := context.AfterFunc(ctx, s.Close)
	defer stop()
	if s.canPipeline(m) {
		return s.pipelined(m, body)
	}
	c := s.c
	if s.dirty {
		c.CommandTimeout = to.Mail
		if err := c.Reset(); err != nil {
			return nil, err
		}
	}
	s.dirty = true
	c.CommandTimeout = to.Mail
	if err := c.Mail(m.From, s.mailOptions(m, len(body))); err != nil {
		v := Classify(err)
		if v.NextHost {
			return nil, err
		}
		s.dirty = false // a refused MAIL opens no transaction (RFC 5321 §3.3)
		return fill(len(m.Rcpts), v.Reply), nil
	}
	replies, accepted, err := s.rcpts(m.Rcpts, to)
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
func (s *Session) prepare(m *Message) ([]byte, *Reply) {
	if m.SMTPUTF8 && !s.ext.utf8 {
		return nil, &replySMTPUTF8
	}
	body := m.Body
	if !s.ext.eightBit && (m.Body8Bit || has8bit(body)) {
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

func (s *Session) mailOptions(env *Message, size int) *smtp.MailOptions {
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
func (s *Session) rcpts(rcpts []Recipient, to Timeouts) ([]Reply, int, error) {
	replies := make([]Reply, len(rcpts))
	accepted := 0
	s.c.CommandTimeout = to.Rcpt
	for i, r := range rcpts {
		err := s.c.Rcpt(r.Addr, s.rcptOptions(r))
		if err == nil {
			replies[i] = replyRcptOK
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

func (s *Session) rcptOptions(r Recipient) *smtp.RcptOptions {
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
func (s *Session) data(body []byte, to Timeouts) (Reply, error) {
	s.c.CommandTimeout = to.DataInit
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
	s.c.SubmissionTimeout = to.DataFinal
	resp, err := w.CloseWithResponse()
	if err != nil {
		var se *smtp.SMTPError
		if !isDataSent(err) && !errors.As(err, &se) {
			return Reply{}, err // the final dot was not sent: next host
		}
		s.dirty = false
		return s.finalFailed(err), nil
	}
	s.dirty = false
	return okReply(resp.StatusText), nil
}

// finalFailed is the verdict when the end of data got no success reply. A
// reply is kept as it is (a 421 also closes the connection). A timeout or
// lost connection after the final dot (go-smtp's DataSentError) is a
// verdict too: the server may have taken the message (RFC 5321
// §4.5.3.2.6 waits 10 minutes for that reason, and RFC 1047 describes the
// duplicates an immediate resend causes), so the recipients are deferred
// with 451 4.4.2 ("bad connection", RFC 3463) and retried on the schedule,
// never sent to the next MX at once. The connection is not reused.
func (s *Session) finalFailed(err error) Reply {
	v := Classify(err)
	var se *smtp.SMTPError
	if errors.As(err, &se) && !isDataSent(err) {
		if se.Code == 421 {
			s.broken = true
			s.Close()
		}
		return v.Reply
	}
	s.broken = true
	s.Close()
	return withCause(replyFinalLost, v.Reply.Text)
}

func isDataSent(err error) bool {
	var ds *smtp.DataSentError
	return errors.As(err, &ds)
}

var enhRE = regexp.MustCompile(`^[245]\.\d{1,3}\.\d{1,3}$`)

// okReply parses "2.0.0 OK queued as X" into a 250 reply.
func okReply(text string) Reply {
	r := Reply{Code: 250, Text: remoteText(text)}
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
