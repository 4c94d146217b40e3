package smtpclient

import (
	"context"
	"errors"
	"net"
	"net/netip"

	"github.com/emersion/go-smtp"
)

// AttemptOptions are a caller's choices for one attempt (relay/deliver's
// egress sources and traffic shaping). The zero value is Deliver.
type AttemptOptions struct {
	// Source is the local address every new connection of the attempt
	// binds (an egress source); the zero Addr leaves it to the Dialer. A
	// reused Session keeps the source it was opened with: the caller
	// passes only sessions of the same source.
	Source netip.Addr
	// Hostname replaces Options.Hostname in EHLO on new connections (the
	// source's own name, RFC 5321 §4.1.1.1).
	Hostname string
	// Observe, when set, receives each reply a server gave during the
	// attempt: a refused greeting or EHLO (atGreeting), a 421 or other
	// refusal that ended a connection, and the distinct replies of the
	// transaction (relay/shaping's rules and backoff).
	Observe func(r Reply, atGreeting bool)
}

// SourceDialer is a Dialer that can bind a given local address. A
// *net.Dialer needs no such method (its LocalAddr is set on a copy); any
// other Dialer must implement it for AttemptOptions.Source to work.
type SourceDialer interface {
	DialFrom(ctx context.Context, network, address string, local netip.Addr) (net.Conn, error)
}

// DeliverWith is Deliver with per-attempt options.
func (c *Client) DeliverWith(ctx context.Context, tr Transport, m *Message, sess *Session, o AttemptOptions) Attempt {
	a := c.deliver(ctx, tr, m, sess, o)
	if a.Conn.TLSPolicy == PolicyDANE { // DANE outranks MTA-STS (issue 17 policy order)
		return a
	}
	a.Conn.TLSPolicy = tr.Plan().PolicyName()
	a.Conn.TLSFailure = c.stsFailure(tr, &a)
	stsReply(tr, &a)
	return a
}

// DialFrom dials address through d from local (when valid): d's
// DialFrom when it is a SourceDialer, a copy of a *net.Dialer with
// LocalAddr set, or an error for any other Dialer.
func DialFrom(ctx context.Context, d Dialer, address string, local netip.Addr) (net.Conn, error) {
	if !local.IsValid() {
		return d.DialContext(ctx, "tcp", address)
	}
	switch sd := d.(type) {
	case SourceDialer:
		return sd.DialFrom(ctx, "tcp", address, local)
	case *net.Dialer:
		nd := *sd
		nd.LocalAddr = &net.TCPAddr{IP: local.AsSlice()}
		return nd.DialContext(ctx, "tcp", address)
	}
	return nil, newError(withCause(ReplyLocal, "the dialer cannot bind source address "+local.String()), true, nil)
}

// observe passes err's remote reply, if it carries one, to o.Observe.
func (o AttemptOptions) observe(err error, atGreeting bool) {
	var se *smtp.SMTPError
	if o.Observe != nil && errors.As(err, &se) {
		o.Observe(smtpReply(se), atGreeting)
	}
}

// observeReplies passes the distinct replies of a transaction to o.Observe.
func (o AttemptOptions) observeReplies(replies []Reply) {
	if o.Observe == nil {
		return
	}
	for i, r := range replies {
		if r == replyRcptOK || (i > 0 && r == replies[i-1]) {
			continue
		}
		o.Observe(r, false)
	}
}
