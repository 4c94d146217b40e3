package deliver

import (
	"context"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/events"
)

// Finishing: numbers of finisher goroutines and of entries waiting for one.
const (
	finishers     = 64
	deferrers     = 16    // of the finishers, how many also take untried deferrals
	finishBacklog = 25000 // above the consumer's MaxAckPending: never blocks a worker
	ackTimeout    = 30 * time.Second
)

// finishJob is an attempt's result on its way to the queue: events,
// reporter, then Done or Defer.
type finishJob struct {
	j        *job
	body     []byte // nil when not read (deferred without connecting)
	replies  []Reply
	conn     connInfo
	rconn    []connInfo // per recipient (envelope order) when they differ; nil: conn
	start    time.Time
	end      time.Time
	untried  bool // deferred without an attempt to connect
	busy     bool // untried because the destination had no room (not a failure of it)
	releaseR bool // shutdown: hand the lease back
}

// startFinishers starts the finisher pool. Results of real attempts go
// first (their ack closes the duplicate window); entries deferred without
// connecting wait in a second line, so a flood of them never delays an ack.
func (e *Engine) startFinishers() {
	e.finishing = make(chan *finishJob, finishBacklog)
	e.deferring = make(chan *finishJob, finishBacklog)
	for i := range finishers {
		e.finishWG.Add(1)
		go func() {
			defer e.finishWG.Done()
			hi, lo := e.finishing, e.deferring
			if i >= deferrers {
				lo = nil // most finishers only ever ack attempts
			}
			for hi != nil || lo != nil {
				select {
				case fj, ok := <-hi:
					if !ok {
						hi = nil
						continue
					}
					e.complete(fj)
					continue
				default:
				}
				select {
				case fj, ok := <-hi:
					if !ok {
						hi = nil
						continue
					}
					e.complete(fj)
				case fj, ok := <-lo:
					if !ok {
						lo = nil
						continue
					}
					e.complete(fj)
				}
			}
		}()
	}
}

// finish hands a result to the finishers, so that the worker's connection
// goes on with the next entry while the queue is updated.
func (e *Engine) finish(fj *finishJob) {
	if fj.untried {
		e.deferring <- fj
		return
	}
	e.finishing <- fj
}

// deferUntried defers a job that was not attempted (breaker open, queue
// full, waited too long): it counts as an attempt with reply r.
func (e *Engine) deferUntried(j *job, r Reply) {
	now := time.Now()
	e.finish(&finishJob{j: j, replies: fill(len(j.en.Env.Rcpts), r), conn: connInfo{tls: "none"},
		start: now, end: now, untried: true, busy: r == replyBusy})
}

// release hands a job's lease back for immediate redelivery (shutdown).
func (e *Engine) release(j *job) { e.finish(&finishJob{j: j, releaseR: true}) }

// outcomes sorts the recipients of an attempt.
type outcomes struct {
	delivered, deferred, failed, relayed []Result
}

// complete turns an attempt's replies into events, reporter calls and the
// entry's fate: Done when nothing is left, else Defer with the remaining
// recipients at the next retry time; after retry.max_age the remaining
// recipients fail with their last temporary reply.
func (e *Engine) complete(fj *finishJob) {
	en := fj.j.en
	defer e.leases.remove(en)
	ctx, cancel := context.WithTimeout(context.Background(), ackTimeout)
	defer cancel()
	if fj.releaseR {
		if err := en.Nak(); err != nil {
			e.log.Warn().Err(err).Str("queue_id", en.Env.ID).Msg("release failed; redelivered after AckWait")
		}
		return
	}
	rt := e.rt.Load()
	env := en.Env
	o := e.sort(fj)
	expired := len(o.deferred) > 0 && fj.end.Sub(env.Arrival) >= rt.cfg.Delivery.Retry.MaxAge.D()
	if expired {
		for i := range o.deferred {
			o.deferred[i].Status = events.StatusFailed
		}
		o.failed, o.deferred = append(o.failed, o.deferred...), nil
	}
	paced := false
	if !fj.busy {
		key := fj.j.tr.Key()
		var change paceChange
		paced, change = e.pace.observe(key, len(o.delivered) > 0, fj.end)
		e.logPaceChange(key, change, fj.replies)
	}
	// A failing destination's entry is parked (park.go) when it can be;
	// otherwise its retry is paced. A parked entry takes no pacer slot.
	var parkUntil time.Time
	park := false
	if paced && len(o.deferred) > 0 {
		parkUntil, park = e.parkDue(env, fj.end)
	}
	next := e.nextAttempt(env, fj.end, paced && len(o.deferred) > 0 && !park)
	keep := e.report(ctx, fj, o)
	e.emit(fj, o, keep, next)
	remaining := append(slices.Clone(o.deferred), keep...)
	if env.Probe && len(o.delivered) > 0 {
		e.wakeAll(ctx, env.Domain)
	}
	if len(remaining) == 0 {
		if err := en.Done(ctx); err != nil {
			e.log.Error().Err(err).Str("queue_id", env.ID).Str("domain", env.Domain).
				Msg("ack failed; the entry is delivered again after AckWait")
		}
		return
	}
	if park && len(keep) == 0 {
		e.parkEntry(ctx, en, remaining, parkUntil, next)
		return
	}
	e.deferEntry(ctx, en, remaining, next)
}

// sort classifies each recipient's reply (RFC 5321 §4.2.1: 2xx done, 4xx
// retried, 5xx failed).
func (e *Engine) sort(fj *finishJob) outcomes {
	var o outcomes
	for i, rc := range fj.j.en.Env.Rcpts {
		r, conn := fj.replies[i], fj.connOf(i)
		res := Result{Rcpt: rc, Code: r.Code, Enh: r.Enh, Reply: r.Text, MX: conn.mx, IP: conn.ip,
			Time: fj.end, Temporary: r.Temporary()}
		switch {
		case r.OK():
			res.Status = events.StatusDelivered
			o.delivered = append(o.delivered, res)
			if wantsSuccess(rc) && !conn.dsn {
				o.relayed = append(o.relayed, res)
			}
		case r.Temporary():
			res.Status = events.StatusDeferred
			o.deferred = append(o.deferred, res)
		default:
			res.Status = events.StatusFailed
			o.failed = append(o.failed, res)
		}
	}
	return o
}

// connOf is the connection recipient i's transaction used.
func (fj *finishJob) connOf(i int) connInfo {
	if i >= 0 && i < len(fj.rconn) {
		return fj.rconn[i]
	}
	return fj.conn
}

func wantsSuccess(r queue.Recipient) bool {
	return slices.ContainsFunc(r.Notify, func(n string) bool { return strings.EqualFold(n, "SUCCESS") })
}

// report calls the Reporter. It returns failed recipients whose report
// failed: they stay queued, so the report is made again later.
func (e *Engine) report(ctx context.Context, fj *finishJob, o outcomes) []Result {
	if e.rep == nil || (len(o.failed) == 0 && len(o.relayed) == 0 && !e.delayDue(fj, o)) {
		return nil
	}
	env := fj.j.en.Env
	body := fj.body
	if body == nil {
		b, err := fj.j.en.Body(ctx)
		if err != nil {
			e.log.Error().Err(err).Str("queue_id", env.ID).Msg("reading the body for the reporter")
			return o.failed
		}
		body = b
	}
	var keep []Result
	if len(o.failed) > 0 {
		if err := e.rep.Failed(ctx, env, body, o.failed); err != nil {
			e.log.Error().Err(err).Str("queue_id", env.ID).Msg("reporting failures; the recipients stay queued")
			keep = o.failed
		}
	}
	if len(o.relayed) > 0 {
		if err := e.rep.Relayed(ctx, env, body, o.relayed); err != nil {
			// The mail was delivered: sending it again would be worse than
			// a missing "relayed" notice.
			e.log.Error().Err(err).Str("queue_id", env.ID).Msg("reporting relayed recipients; notice lost")
		}
	}
	if e.delayDue(fj, o) {
		if err := e.rep.Delayed(ctx, env, body, o.deferred); err == nil {
			fj.j.en.Env.DelayNotified = true
		} else {
			e.log.Warn().Err(err).Str("queue_id", env.ID).Msg("delay notice failed; tried again next attempt")
		}
	}
	return keep
}

func (e *Engine) delayDue(fj *finishJob, o outcomes) bool {
	after := e.rt.Load().cfg.Bounces.DelayNoticeAfter.D()
	env := fj.j.en.Env
	return after > 0 && len(o.deferred) > 0 && !env.DelayNotified && fj.end.Sub(env.Arrival) >= after
}

// deferEntry re-schedules the entry with only the remaining recipients.
func (e *Engine) deferEntry(ctx context.Context, en *queue.Entry, remaining []Result, next time.Time) {
	env := remainingEnv(en.Env, remaining)
	if err := en.Defer(ctx, env, next); err != nil {
		e.log.Error().Err(err).Str("queue_id", env.ID).Str("domain", env.Domain).
			Msg("defer failed; the entry is delivered again after AckWait")
	}
}

// nextAttempt is now + retry.schedule[attempt] (the last interval
// repeating) ± 10% jitter — placed by the pacer when the destination is
// failing (pace.go) — but no later than the entry's max_age.
func (e *Engine) nextAttempt(env *queue.Envelope, now time.Time, paced bool) time.Time {
	rt := e.rt.Load()
	d := retryDelay(rt.schedule, env.Attempt, rand.Float64())
	next := now.Add(d)
	if paced {
		next = e.pace.place(next)
	}
	if expiry := env.Arrival.Add(rt.cfg.Delivery.Retry.MaxAge.D()); next.After(expiry) && expiry.After(now) {
		next = expiry
	}
	return next
}

// retryDelay is schedule[attempt] (the last one repeating) scaled by a
// jitter factor in [0.9, 1.1) derived from u in [0, 1).
func retryDelay(schedule []time.Duration, attempt int, u float64) time.Duration {
	d := schedule[min(max(attempt, 0), len(schedule)-1)]
	return time.Duration(float64(d) * (0.9 + 0.2*u))
}

// emit writes one delivery event per recipient of the attempt.
func (e *Engine) emit(fj *finishJob, o outcomes, keep []Result, next time.Time) {
	env := fj.j.en.Env
	dur := fj.end.Sub(fj.start).Milliseconds()
	all := slices.Concat(o.delivered, o.deferred, o.failed)
	for _, r := range all {
		conn := fj.conn
		if fj.rconn != nil {
			conn = fj.connOf(slices.IndexFunc(env.Rcpts, func(rc queue.Recipient) bool { return rc.Addr == r.Rcpt.Addr }))
		}
		ev := &events.Event{Time: fj.end, Event: events.Delivery, QueueID: env.ID, MsgID: env.MsgID,
			Rcpt: r.Rcpt.Addr, Domain: env.Domain, MX: conn.mx, IP: conn.ip, Port: conn.port,
			TLS: conn.tls, TLSCipher: conn.cipher, TLSVerified: events.Bool(conn.verified),
			Attempt: env.Attempt + 1, Status: r.Status, SMTPCode: r.Code, SMTPEnh: r.Enh, Reply: r.Reply,
			DurationMS: dur, Arrival: env.Arrival}
		if r.Status == events.StatusDeferred || (r.Status == events.StatusFailed && slices.ContainsFunc(keep,
			func(k Result) bool { return k.Rcpt.Addr == r.Rcpt.Addr })) {
			ev.NextAttempt = &next
		}
		if fj.untried {
			ev.Reason = "not_attempted"
		}
		e.ev.Emit(ev)
	}
}

// logPaceChange says when a destination starts or stops counting as
// failing (its retries paced, pace.go).
func (e *Engine) logPaceChange(key string, change paceChange, replies []Reply) {
	switch change {
	case paceFailing:
		ev := e.log.Warn().Str("event", "destination_failing").Str("destination", key).Int("attempts", paceAfter).
			Str("pace", e.rt.Load().cfg.Delivery.Retry.Pace.Source)
		if len(replies) > 0 {
			ev = ev.Str("reply", replies[0].String())
		}
		ev.Msg("nothing delivered in the last attempts; its retries are paced")
	case paceRecovered:
		e.log.Info().Str("event", "destination_recovered").Str("destination", key).
			Msg("delivering again; new retries follow the schedule")
	}
}
