package deliver

import (
	"github.com/jetrelay/jetrelay/relay/outcome"
	"github.com/jetrelay/jetrelay/relay/safetext"
)

// Replies the delivery engine makes itself, for entries it defers without
// an attempt or whose attempt broke down (RFC 3463 codes). The SMTP
// client's catalogue is relay/smtpclient/codes.go.
var (
	replyBusy        = outcome.Reply{Code: 451, Enh: "4.4.5", Text: "destination busy; deferred without connecting"}
	replyUnreachable = outcome.Reply{Code: 451, Enh: "4.4.1", Text: "destination unreachable; deferred without connecting"}
	replyPanic       = outcome.Reply{Code: 451, Enh: "4.3.0", Text: "local error during delivery; retried later"}
	// replyShaped: traffic shaping (relay/shaping) made the destination
	// wait; the cause says for what ("shaping: connections (google)").
	replyShaped = outcome.Reply{Code: 451, Enh: "4.4.5", Text: "waiting for the provider's limits; deferred without connecting"}
)

// unreachable is replyUnreachable quoting the failure that opened the
// breaker, kept within the 4 KiB every stored reply has.
func unreachable(last outcome.Reply) outcome.Reply {
	r := replyUnreachable.WithCause(last.String())
	r.Text = safetext.Reply(r.Text)
	return r
}
