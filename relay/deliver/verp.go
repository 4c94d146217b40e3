package deliver

import (
	"context"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/outcome"
	"github.com/jetrelay/jetrelay/relay/smtpclient"
)

// VERP on the wire. With Options.Sender and Settings.VERP set, each
// recipient of an entry with a non-null sender gets a mail transaction of
// its own whose reverse-path names queue id and recipient
// (relay/bounce's b+<token>@<verp_domain>), so an asynchronous bounce says
// exactly what failed. The transactions follow one another on the same
// connection; a finished one needs no RSET (RFC 5321 §4.1.1.5), only one
// left open (a rejected RCPT) does, which the smtpclient Session tracks. DSNs (the
// null reverse-path) keep one transaction for all their recipients.

// deliverEntry delivers env's pending recipients: in one transaction, or
// one per recipient under VERP.
func (a *attempter) deliverEntry(ctx context.Context, j *job, body []byte, sess *smtpclient.Session,
	o smtpclient.AttemptOptions) entryAttempt {
	env := j.en.Env
	if !a.verp(env) {
		c := a.rt.Load().client
		return entryAttempt{Attempt: c.DeliverWith(ctx, j.tr, message(env, env.From, env.Rcpts, body), sess, o)}
	}
	return a.deliverEach(ctx, j, body, sess, o)
}

// verp reports whether env's recipients get VERP senders.
func (a *attempter) verp(env *queue.Envelope) bool {
	return a.sender != nil && env.From != "" && a.rt.Load().set.VERP
}

// deliverEach runs one transaction per recipient, the session carried from
// one to the next (the client dials again if it broke). Once a recipient's
// transaction reaches no server, the recipients after it share that
// verdict, as they would have shared its transaction: a dead destination
// costs one round of connection attempts, not one per recipient. Cancelled
// after a server gave some recipient a verdict, the rest are deferred
// (ReplyShutdown) instead of the entry being released, so recipients
// already delivered are not sent again.
func (a *attempter) deliverEach(ctx context.Context, j *job, body []byte, sess *smtpclient.Session,
	o smtpclient.AttemptOptions) entryAttempt {
	c, env, tr := a.rt.Load().client, j.en.Env, j.tr
	n := len(env.Rcpts)
	all := entryAttempt{conns: make([]smtpclient.ConnInfo, 0, n)}
	all.Replies = make([]outcome.Reply, 0, n)
	for i := range env.Rcpts {
		rc := env.Rcpts[i : i+1]
		out := c.DeliverWith(ctx, tr, message(env, a.verpSender(ctx, env, rc[0].Addr), rc, body), sess, o)
		sess = out.Session
		switch {
		case out.Canceled && !all.Reached:
			return entryAttempt{Attempt: out}
		case out.Canceled:
			out.Replies = []outcome.Reply{smtpclient.ReplyShutdown}
		case i == 0 && !out.Reached:
			out.Replies = fill(n, out.Replies[0])
			return entryAttempt{Attempt: out}
		}
		all.Session, all.Conn, all.Last, all.Down = out.Session, out.Conn, out.Last, out.Down
		all.Replies = append(all.Replies, out.Replies[0])
		all.conns = append(all.conns, out.Conn)
		if out.Canceled || !out.Reached {
			for len(all.Replies) < n {
				all.Replies = append(all.Replies, out.Replies[0])
				all.conns = append(all.conns, out.Conn)
			}
			return all
		}
		all.Reached = true
	}
	return all
}

// verpSender is the reverse-path for rcpt: Options.Sender's VERP address,
// within verpTimeout; when its record cannot be stored the plain sender
// is used (the mail still goes; an asynchronous bounce then reaches the
// sender directly) and a warning logged.
func (a *attempter) verpSender(ctx context.Context, env *queue.Envelope, rcpt string) string {
	ctx, cancel := context.WithTimeout(ctx, verpTimeout)
	defer cancel()
	from, err := a.sender(ctx, env, rcpt)
	if err != nil {
		a.log.Warn().Err(err).Str("event", "verp_failed").Str("queue_id", env.ID).Str("rcpt", rcpt).
			Msg("VERP record not stored; sending with the plain envelope sender")
		return env.From
	}
	return from
}

// verpTimeout bounds storing one VERP record.
const verpTimeout = 5 * time.Second
