package smtpclient

import (
	"github.com/emersion/go-smtp"
)

// Pipelined transactions (RFC 2920). To a server that offers PIPELINING a
// transaction goes through the fork's Client.SendPipelined: [RSET] MAIL
// RCPT… DATA in one write, then the dot-stuffed body and the final dot;
// two round trips whatever the recipient count. go-smtp encodes MAIL and
// RCPT (the same encoder as its lock-step Mail and Rcpt) and reads every
// reply within its reply limits; this file only maps the replies to
// recipients exactly as the lock-step path does.

// canPipeline reports whether m can go as a pipelined transaction:
// arguments go-smtp would refuse before sending anything take the
// lock-step path, which settles them per recipient.
func (s *Session) canPipeline(m *Message) bool {
	if !s.ext.pipelining || !validLine(m.From) {
		return false
	}
	if s.ext.dsn && !printableASCII(m.EnvID) {
		return false
	}
	for _, r := range m.Rcpts {
		if !validLine(r.Addr) {
			return false
		}
		if o := s.rcptOptions(r); o != nil && o.OriginalRecipient != "" &&
			(o.OriginalRecipientType != smtp.DSNAddressTypeRFC822 || !printableASCII(o.OriginalRecipient)) {
			return false
		}
	}
	return true
}

// pipelined runs m as one pipelined transaction (see canPipeline). An
// error means the connection failed before a verdict (next host); a loss
// after the final dot is a verdict (finalFailed).
func (s *Session) pipelined(m *Message, body []byte) ([]Reply, error) {
	rcpts := make([]smtp.PipelinedRcpt, len(m.Rcpts))
	for i, r := range m.Rcpts {
		rcpts[i] = smtp.PipelinedRcpt{Addr: r.Addr, Opts: s.rcptOptions(r)}
	}
	res, err := s.c.SendPipelined(m.From, s.mailOptions(m, len(body)), rcpts, body)
	if err != nil {
		if isDataSent(err) {
			s.dirty = false
			return fill(len(m.Rcpts), s.finalFailed(err)), nil
		}
		return nil, err
	}
	// A transaction stays open when MAIL was accepted and DATA refused;
	// the lock-step path then says RSET first (RFC 5321 §4.1.1.5).
	s.dirty = res.Mail == nil && res.Data != nil
	replies := make([]Reply, len(m.Rcpts))
	final := okReply(res.FinalText)
	if res.Final == nil && res.Accepted > 0 {
		s.sent++
	}
	for i := range replies {
		switch se := res.Err(i); {
		case se != nil:
			replies[i] = Classify(se).Reply
		default:
			replies[i] = final
		}
	}
	return replies, nil
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// validLine is go-smtp's check on command arguments.
func validLine(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == '\r' || s[i] == '\n' {
			return false
		}
	}
	return true
}
