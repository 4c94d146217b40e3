package submit

import (
	"sync"

	"github.com/emersion/go-smtp"
)

// One refusal, one rejection line.
//
// A pipelining client (RFC 2920 §3.1) sends MAIL, RCPT… and DATA in one
// go. When MAIL is refused, go-smtp answers each following RCPT with
// "502 5.5.1 Missing MAIL FROM" and DATA with "502 5.5.1 Missing RCPT TO";
// when every RCPT is refused, DATA gets the latter. Those replies are
// consequences of the first refusal, not new ones: the refused MAIL or
// RCPT is the event=rejected line, and the sequence errors that follow it
// in the same transaction are logged at debug level only. A sequence error
// without a refusal before it (a client that never sent MAIL) is still a
// rejection.
//
// txRefusal is that state, per connection: set by a refused MAIL or RCPT
// (the session's or go-smtp's own), cleared by the next MAIL, RSET, EHLO
// or HELO and when the transaction ends (session.Reset).
type txRefusal struct {
	mu      sync.Mutex
	verb    string // the command being handled
	refused bool   // a MAIL or RCPT of this transaction was refused
}

// command notes the command about to be handled (Server.CommandHook).
func (r *txRefusal) command(verb string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.verb = verb
	switch verb {
	case "MAIL", "RSET", "EHLO", "HELO":
		r.refused = false
	}
}

// reset forgets a refusal: the transaction is over.
func (r *txRefusal) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.refused = false
}

// rejected notes a refusal of the current command and reports whether it
// only follows from an earlier refusal in this transaction (then it is not
// a new rejection).
func (r *txRefusal) rejected(code int, ec smtp.EnhancedCode) (followOn bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.refused && isSequenceError(code, ec) {
		return true
	}
	if r.verb == "MAIL" || r.verb == "RCPT" {
		r.refused = true
	}
	return false
}

// isSequenceError: a bad-sequence reply (RFC 5321 §4.2.4 503; go-smtp
// answers 502) with 5.5.1 (RFC 3463 §3.6: invalid command).
func isSequenceError(code int, ec smtp.EnhancedCode) bool {
	return (code == 502 || code == 503) && ec == smtp.EnhancedCode{5, 5, 1}
}
