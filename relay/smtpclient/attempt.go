package smtpclient

import (
	"context"
	"errors"
	"net"
	"time"
)

// Deliver runs one attempt at m through tr: the reused session first (if
// it is still good), then the addresses of tr's hosts in order until one
// gives a verdict. 421, dropped connections, timeouts and TLS failures move
// on to the next address (RFC 5321 §4.5.4.1, §5.1), within the attempt
// budget: at most Options.MaxAddresses addresses for MX delivery, and no
// new dial after Options.AttemptTimeout (a transaction under way is not
// interrupted by it). A connection lost after the final dot is a verdict,
// not a reason to try another host (see replyFinalLost).
//
// The attempt's ConnInfo names the TLS policy it ran under, so that a
// failure reads as what it was: "tls":"failed" under "tls_policy":"configured".
func (c *Client) Deliver(ctx context.Context, tr Transport, m *Message, sess *Session) Attempt {
	return c.DeliverWith(ctx, tr, m, sess, AttemptOptions{})
}

func (c *Client) deliver(ctx context.Context, tr Transport, m *Message, sess *Session, o AttemptOptions) Attempt {
	to := c.o.Timeouts
	if sess == nil || !sess.dane { // a DANE session outranks MTA-STS
		sess = stsSession(ctx, tr, sess)
	}
	if sess != nil {
		if time.Since(sess.lastUsed) < to.Idle {
			if a, err := c.converse(ctx, sess, m, o); err == nil {
				return a
			}
			// A reused connection the server closed meanwhile: not a verdict.
		}
		sess.Close()
	}
	hosts, err := tr.Hosts(ctx)
	if err != nil {
		v := Classify(err)
		var de *DNSError
		a := Attempt{Replies: fill(len(m.Rcpts), v.Reply), Last: v, Conn: ConnInfo{TLS: "none"},
			Down: errors.As(err, &de) && de.Kind == DNSTemporary, Canceled: ctx.Err() != nil}
		var tf *TLSFailure
		if errors.As(err, &tf) {
			a.Conn.TLSPolicy, a.Conn.TLSFailure = PolicyDANE, tf.Result
		}
		return a
	}
	return c.tryHosts(ctx, &hostsRun{tr: tr, m: m, o: o}, hosts)
}

// converse runs m on an open session; an error means the connection
// failed before a verdict and was closed.
func (c *Client) converse(ctx context.Context, s *Session, m *Message, o AttemptOptions) (Attempt, error) {
	replies, err := s.transact(ctx, m, c.o.Timeouts)
	if err != nil {
		o.observe(err, false)
		s.Close()
		return Attempt{}, err
	}
	o.observeReplies(replies)
	a := Attempt{Replies: replies, Session: s, Reached: true, Conn: s.Info()}
	if s.broken {
		s.Close()
		a.Session = nil
	} else {
		s.lastUsed = time.Now()
	}
	return a, nil
}

// hostsRun is the state of one walk over a destination's addresses.
type hostsRun struct {
	tr       Transport
	m        *Message
	o        AttemptOptions
	a        Attempt
	deadline time.Time
	dialled  int
	// refusedTLS: some host could not give the REQUIRETLS message an
	// authenticated TLS connection with REQUIRETLS.
	refusedTLS bool
	// denied counts addresses refused by the network guard.
	denied int
}

func (c *Client) tryHosts(ctx context.Context, r *hostsRun, hosts []Host) Attempt {
	tr, m := r.tr, r.m
	r.a, r.deadline = Attempt{Down: true, Conn: ConnInfo{TLS: "none"}}, time.Now().Add(c.o.AttemptTimeout)
	limited := tr.limited()
	for _, h := range hosts {
		for _, ip := range h.IPs {
			if ctx.Err() != nil {
				return Attempt{Canceled: true}
			}
			if (limited && r.dialled >= c.o.MaxAddresses) || !time.Now().Before(r.deadline) {
				c.budgetSpent(r, tr)
				return c.settle(ctx, r, m)
			}
			r.dialled++
			if a, ok := c.tryAddr(ctx, r, h, ip); ok {
				return a
			}
		}
	}
	return c.settle(ctx, r, m)
}

// tryAddr dials one address and runs m on it; ok reports a verdict.
func (c *Client) tryAddr(ctx context.Context, r *hostsRun, h Host, ip net.IP) (Attempt, bool) {
	m := r.m
	r.a.Conn = ConnInfo{MX: h.Name, IP: ip.String(), Port: h.Port, TLS: "none"}
	if len(h.DANE) > 0 {
		r.a.Conn.TLSPolicy = PolicyDANE
	}
	dctx, cancel := context.WithDeadline(ctx, r.deadline)
	s, err := dial(dctx, c.dialRequest(r, h, ip))
	cancel()
	if err == nil {
		r.a.Down = false // a server answered: not a dead destination
		r.a.Conn = s.Info()
		var a Attempt
		if a, err = c.converse(ctx, s, m, r.o); err == nil {
			return a, true
		}
	}
	r.a.Last = Classify(err)
	if isTLSError(err) { // TLS was tried and failed: the reply says why
		r.a.Conn.TLS = TLSFailed
	}
	if tf := (*TLSFailure)(nil); errors.As(err, &tf) {
		r.a.Conn.TLSFailure = tf.Result
	}
	switch {
	case m.RequireTLS && tlsRefusal(r.a.Last):
		r.refusedTLS, r.a.Down = true, false
	case r.a.Last.Reply == replyDeniedNetwork:
		r.denied++
	}
	c.o.Logger.Debug().Str("error", remoteText(err.Error())).Str("event", "host_failed").Str("mx", h.Name).
		Str("ip", r.a.Conn.IP).Msg("trying the next address")
	return Attempt{}, false
}

// budgetSpent notes that the attempt budget ended the walk.
func (c *Client) budgetSpent(r *hostsRun, tr Transport) {
	c.o.Logger.Info().Str("event", "attempt_budget").Str("destination", tr.Key()).Int("addresses", r.dialled).
		Msg("attempt budget used up; the remaining addresses wait for the next attempt")
	if r.a.Last.Reply.Code == 0 {
		r.a.Last = Verdict{Reply: replyBudget}
	}
}

// settle turns a walk that found no verdict into the attempt's replies.
func (c *Client) settle(ctx context.Context, r *hostsRun, m *Message) Attempt {
	if ctx.Err() != nil {
		return Attempt{Canceled: true}
	}
	a := r.a
	switch {
	case r.refusedTLS: // RFC 8689 §5: fail at once, no retries
		a.Last, a.Down = Verdict{Reply: replyRequireTLS}, false
	case r.denied > 0 && r.denied == r.dialled:
		// Every address is internal: permanent, and not a dead destination.
		a.Last, a.Down = Verdict{Reply: replyDeniedNetwork}, false
	case a.Last.Reply.Code == 0:
		a.Last = Verdict{Reply: replyNoUsableMX}
	}
	a.Replies = fill(len(m.Rcpts), a.Last.Reply)
	return a
}

// tlsRefusal reports a failure that a REQUIRETLS message may not retry
// around: no STARTTLS, a failed handshake or certificate check, no
// REQUIRETLS keyword (RFC 8689 §4.2.1).
func tlsRefusal(v Verdict) bool {
	switch v.Reply.Enh {
	case replyTLSFailed.Enh, replyTLSMissing.Enh, replyRequireTLS.Enh:
		return true
	}
	return false
}

func (c *Client) dialRequest(r *hostsRun, h Host, ip net.IP) dialRequest {
	helo := c.o.Hostname
	if r.o.Hostname != "" {
		helo = r.o.Hostname
	}
	return dialRequest{dialer: r.tr.dialer(c), host: h, ip: ip, plan: hostPlan(r.tr, h), helo: helo, roots: c.o.Roots,
		timeouts: c.o.Timeouts, conns: c.o.Conns, source: r.o.Source, opts: r.o, dane: h.DANE}
}

// hostPlan is the plan for a connection to h: the transport's, or DANE's
// when h has usable TLSA records (RFC 7672 §2.2).
func hostPlan(tr Transport, h Host) Plan {
	if len(h.DANE) > 0 {
		return danePlan(tr.Plan())
	}
	return tr.Plan()
}
