package deliver

import (
	"context"

	"github.com/jetrelay/jetrelay/queue"
)

// VERP on the wire. With Options.Sender set and bounces.verp_domain
// configured, each recipient of an entry with a non-null sender gets a mail
// transaction of its own whose reverse-path names queue id and recipient
// (relay/bounce's b+<token>@<verp_domain>), so an asynchronous bounce says
// exactly what failed. The transactions follow one another on the same
// connection; a finished one needs no RSET (RFC 5321 §4.1.1.5), only one
// left open (a rejected RCPT) does, which session.dirty tracks. DSNs (the
// null reverse-path) keep one transaction for all their recipients.

// deliverEntry delivers env's pending recipients: in one transaction, or
// one per recipient under VERP.
func (e *Engine) deliverEntry(ctx context.Context, tr Transport, env *queue.Envelope, body []byte, sess *session) outcome {
	if !e.verp(env) {
		return e.deliver(ctx, tr, &transaction{env: env, from: env.From, rcpts: env.Rcpts, body: body}, sess)
	}
	return e.deliverEach(ctx, tr, env, body, sess)
}

// verp reports whether env's recipients get VERP senders.
func (e *Engine) verp(env *queue.Envelope) bool {
	return e.sender != nil && env.From != "" && e.rt.Load().cfg.Bounces.VERPDomain != ""
}

// deliverEach runs one transaction per recipient, the session carried from
// one to the next (deliver dials again if it broke). Once a recipient's
// transaction reaches no server, the recipients after it share that
// verdict, as they would have shared its transaction: a dead destination
// costs one round of connection attempts, not one per recipient. Cancelled
// after a server gave some recipient a verdict, the rest are deferred
// (replyShutdown) instead of the entry being released, so recipients
// already delivered are not sent again.
func (e *Engine) deliverEach(ctx context.Context, tr Transport, env *queue.Envelope, body []byte, sess *session) outcome {
	n := len(env.Rcpts)
	all := outcome{replies: make([]Reply, 0, n), conns: make([]connInfo, 0, n)}
	for i := range env.Rcpts {
		rc := env.Rcpts[i : i+1]
		m := &transaction{env: env, from: e.sender(env, rc[0].Addr), rcpts: rc, body: body}
		out := e.deliver(ctx, tr, m, sess)
		sess = out.sess
		switch {
		case out.canceled && !all.reached:
			return out
		case out.canceled:
			out.replies = []Reply{replyShutdown}
		case i == 0 && !out.reached:
			out.replies = fill(n, out.replies[0])
			return out
		}
		all.sess, all.host, all.ip, all.port, all.last = out.sess, out.host, out.ip, out.port, out.last
		all.replies = append(all.replies, out.replies[0])
		all.conns = append(all.conns, out.info())
		if out.canceled || !out.reached {
			for len(all.replies) < n {
				all.replies = append(all.replies, out.replies[0])
				all.conns = append(all.conns, out.info())
			}
			return all
		}
		all.reached = true
	}
	return all
}
