// Package outcome is the one shape of an SMTP result that delivery and
// bounce handling share: a Reply (basic code, enhanced code, text), a typed
// Status, and a Result that says what happened to one recipient in one
// attempt. It is a leaf: it imports only queue (for the recipient), so
// relay/deliver produces Results and relay/bounce consumes them without
// either importing the other.
//
// queue.Reply stays the JSON storage form in an envelope (last_reply);
// ToStored and FromStored are the only conversions between the two.
//
// A Reply whose text came from a remote server has already been made safe
// to store, log and quote by the code that read it (relay/smtpclient): at
// most 4 KiB, control characters escaped. Replies built here carry text
// jetrelay wrote itself.
package outcome

import (
	"strconv"
	"time"

	"github.com/jetrelay/jetrelay/queue"
)

// Reply is an SMTP verdict: one a remote server sent, or one jetrelay made
// up for a failure that produced no reply (DNS, TCP, TLS, policy). Code is
// the RFC 5321 §4.2 reply code, Enh the RFC 3463 enhanced status code
// ("" when there is none).
type Reply struct {
	Code int
	Enh  string
	Text string
}

// Temporary reports a 4xx reply (retried; RFC 5321 §4.2.1).
func (r Reply) Temporary() bool { return r.Code/100 == 4 }

// Permanent reports a 5xx reply (failed for good).
func (r Reply) Permanent() bool { return r.Code/100 == 5 }

// OK reports a 2xx reply.
func (r Reply) OK() bool { return r.Code/100 == 2 }

// String is the reply as a server would write its last line: "550 5.1.1 text".
func (r Reply) String() string {
	if r.Enh == "" {
		return strconv.Itoa(r.Code) + " " + r.Text
	}
	return strconv.Itoa(r.Code) + " " + r.Enh + " " + r.Text
}

// WithCause returns r with ": cause" appended to its text (cause "" → r).
func (r Reply) WithCause(cause string) Reply {
	if cause != "" {
		r.Text += ": " + cause
	}
	return r
}

// Status is a recipient's state after an attempt. The string values are
// the relay/events status values, so events stay compatible.
type Status string

// Statuses.
const (
	Delivered Status = "delivered" // accepted by the next hop (2xx)
	Deferred  Status = "deferred"  // temporary failure: retried later (4xx)
	Failed    Status = "failed"    // permanent failure, or retry.max_age reached
)

// Result is one recipient's outcome of one attempt. It embeds the reply
// that decided it, so r.Code, r.Enh and r.Text are the reply's.
type Result struct {
	Rcpt   queue.Recipient
	Status Status
	Reply
	MX   string // the host that gave the reply ("" when none was reached)
	IP   string
	Time time.Time
	// Temporary: the (last) reply was temporary. With Status Failed this
	// is a retry.max_age expiry carrying the last temporary reply.
	Temporary bool
}

// ToStored is the envelope's storage form of r (queue.Envelope.LastReply).
func ToStored(r Reply, mx string) queue.Reply {
	return queue.Reply{Code: r.Code, Enh: r.Enh, Text: r.Text, MX: mx}
}

// FromStored is the Reply an envelope stored with ToStored.
func FromStored(s queue.Reply) Reply {
	return Reply{Code: s.Code, Enh: s.Enh, Text: s.Text}
}
