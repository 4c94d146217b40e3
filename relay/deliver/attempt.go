package deliver

import (
	"context"
	"errors"
	"time"
)

// outcome is what one attempt at one entry produced.
type outcome struct {
	replies []Reply // one per pending recipient, in envelope order
	sess    *session
	// host and ip of the last server tried (for the log when no session).
	host, ip string
	port     int
	// reached: some server gave the transaction a verdict (the breaker closes).
	reached bool
	// down: no server could be reached (or DNS failed temporarily).
	down     bool
	last     Verdict
	canceled bool
	// conns: per recipient (envelope order), the connection its
	// transaction used, when recipients had transactions of their own
	// (VERP); nil means every recipient used info().
	conns []connInfo
}

// attempt delivers one job with sess (reused if still good) and returns
// the session to keep for the next job.
func (e *Engine) attempt(d *dest, j *job, sess *session) *session {
	ctx := e.sched.ctx
	start := time.Now()
	e.leases.beat(j.en) // a fresh lease for the whole transaction
	body, err := j.en.Body(ctx)
	var out outcome
	if err != nil {
		v := Verdict{Reply: withCause(replyLocal, "reading the message body: "+err.Error())}
		out = outcome{replies: fill(len(j.en.Env.Rcpts), v.Reply), sess: sess, last: v}
	} else {
		out = e.deliverEntry(ctx, j.tr, j.en.Env, body, sess)
	}
	// Cancelled before any server gave a verdict: hand the entry back. Once
	// one did (some recipients may be delivered), the replies are kept.
	if out.canceled || (ctx.Err() != nil && !out.reached) {
		if out.sess != nil {
			out.sess.close()
		}
		e.release(j)
		return nil
	}
	switch {
	case out.reached:
		e.record(d, true, out.last)
	case out.down:
		e.record(d, false, out.last)
	}
	e.finish(&finishJob{j: j, body: body, replies: out.replies, conn: out.info(), rconn: out.conns,
		start: start, end: time.Now()})
	return out.sess
}

// deliver tries the reused session first, then every address of every host
// in order until one gives a verdict. 421, dropped connections, timeouts and
// TLS failures move on to the next address (RFC 5321 §4.5.4.1, §5.1).
func (e *Engine) deliver(ctx context.Context, tr Transport, m *transaction, sess *session) outcome {
	rt := e.rt.Load()
	if sess != nil {
		if time.Since(sess.lastUsed) < rt.to.idle {
			replies, err := sess.transact(ctx, m, rt.to)
			if err == nil {
				sess.lastUsed = time.Now()
				return outcome{replies: replies, sess: sess, reached: true}
			}
			// A reused connection the server closed meanwhile: not a verdict.
		}
		sess.close()
	}
	hosts, err := tr.Hosts(ctx)
	if err != nil {
		v := Classify(err)
		var de *DNSError
		return outcome{replies: fill(len(m.rcpts), v.Reply), last: v,
			down: errors.As(err, &de) && de.Kind == DNSTemporary, canceled: ctx.Err() != nil}
	}
	plan := tr.Plan()
	out := outcome{down: true}
	requireTLSRefused := false
	for _, h := range hosts {
		for _, ip := range h.IPs {
			if ctx.Err() != nil {
				return outcome{canceled: true}
			}
			out.host, out.ip, out.port = h.Name, ip.String(), h.Port
			s, err := dial(ctx, dialRequest{dialer: e.dialer, host: h, ip: ip, plan: plan,
				helo: rt.cfg.Hostname, roots: rt.roots, timeouts: rt.to, conns: e.conns})
			if err == nil {
				out.down = false // a server answered: not a dead destination
				var replies []Reply
				if replies, err = s.transact(ctx, m, rt.to); err == nil {
					s.lastUsed = time.Now()
					return outcome{replies: replies, sess: s, reached: true}
				}
				s.close()
			}
			out.last = Classify(err)
			if out.last.Enh == replyRequireTLS.Enh {
				requireTLSRefused, out.down = true, false
			}
			e.log.Debug().Err(err).Str("event", "host_failed").Str("mx", h.Name).Str("ip", out.ip).
				Msg("trying the next address")
		}
	}
	if ctx.Err() != nil {
		return outcome{canceled: true}
	}
	if requireTLSRefused { // RFC 8689 §4.2.1: fail at once, no retries
		out.last = Verdict{Reply: replyRequireTLS}
	}
	out.replies = fill(len(m.rcpts), out.last.Reply)
	return out
}

// connInfo is what the delivery log says about the connection used.
type connInfo struct {
	mx, ip, tls, cipher string
	port                int
	verified, dsn       bool
}

func (o *outcome) info() connInfo {
	if s := o.sess; s != nil {
		return connInfo{mx: s.host, ip: s.ip, port: s.port, tls: s.tlsName(), cipher: s.cipher(),
			verified: s.verified, dsn: s.ext.dsn}
	}
	return connInfo{mx: o.host, ip: o.ip, port: o.port, tls: "none"}
}
