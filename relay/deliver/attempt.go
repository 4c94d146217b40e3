package deliver

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/outcome"
	"github.com/jetrelay/jetrelay/relay/smtpclient"
	"github.com/rs/zerolog"
)

// attempter makes one attempt at one leased entry through the SMTP client
// (relay/smtpclient) and hands the result to the finisher.
type attempter struct {
	log    zerolog.Logger
	rt     *atomic.Pointer[runtime]
	leases *leases
	fin    *finisher
	sender func(ctx context.Context, env *queue.Envelope, rcpt string) (string, error)
}

// result is what an attempt tells the scheduler: the session to keep and
// what the destination's breaker should learn.
type result struct {
	sess    *smtpclient.Session
	reached bool // some server gave the transaction a verdict (the breaker closes)
	down    bool // no server could be reached (or DNS failed temporarily)
	last    smtpclient.Verdict
}

// entryAttempt is an attempt at all of an entry's recipients: the
// client's Attempt, plus per-recipient connections under VERP.
type entryAttempt struct {
	smtpclient.Attempt
	// conns: per recipient (envelope order), the connection its
	// transaction used, when recipients had transactions of their own
	// (VERP); nil means every recipient used Conn.
	conns []smtpclient.ConnInfo
}

// attemptOpts are the worker's choices for an attempt: the client's
// options (egress source, its EHLO name, the shaping observer) and the
// source's name for events and logs.
type attemptOpts struct {
	opts   smtpclient.AttemptOptions
	source string
}

// attempt delivers one job with sess (reused if still good) and returns
// what the scheduler needs, including the session to keep.
func (a *attempter) attempt(ctx context.Context, j *job, sess *smtpclient.Session, ao attemptOpts) result {
	start := time.Now()
	a.leases.beat(j.en) // a fresh lease for the whole transaction
	body, err := j.en.Body(ctx)
	var out entryAttempt
	if err != nil {
		v := smtpclient.Verdict{Reply: smtpclient.ReplyLocal.WithCause("reading the message body: " + err.Error())}
		out.Replies, out.Session, out.Last = fill(len(j.en.Env.Rcpts), v.Reply), sess, v
		out.Conn = smtpclient.ConnInfo{TLS: "none"}
	} else {
		out = a.deliverEntry(ctx, j, body, sess, ao.opts)
	}
	// Cancelled before any server gave a verdict: hand the entry back. Once
	// one did (some recipients may be delivered), the replies are kept.
	if out.Canceled || (ctx.Err() != nil && !out.Reached) {
		if out.Session != nil {
			out.Session.Close()
		}
		a.fin.release(j)
		return result{}
	}
	a.fin.finish(&finishJob{j: j, body: body, replies: out.Replies, conn: out.Conn, rconn: out.conns,
		start: start, end: time.Now(), source: ao.source})
	return result{sess: out.Session, reached: out.Reached, down: out.Down && !out.Reached, last: out.Last}
}

// message is the SMTP client's view of env's recipients rcpts.
func message(env *queue.Envelope, from string, rcpts []queue.Recipient, body []byte) *smtpclient.Message {
	m := &smtpclient.Message{From: from, Body: body, Ret: env.Ret, EnvID: env.EnvID,
		RequireTLS: env.RequireTLS, SMTPUTF8: env.SMTPUTF8, Body8Bit: env.Body8Bit}
	m.Rcpts = make([]smtpclient.Recipient, len(rcpts))
	for i, r := range rcpts {
		m.Rcpts[i] = smtpclient.Recipient{Addr: r.Addr, Notify: r.Notify, ORCPT: r.ORCPT}
	}
	return m
}

func fill(n int, r outcome.Reply) []outcome.Reply {
	out := make([]outcome.Reply, n)
	for i := range out {
		out[i] = r
	}
	return out
}
