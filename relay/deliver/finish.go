package deliver

import (
	"context"
	"math/rand/v2"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/outcome"
	"github.com/jetrelay/jetrelay/relay/smtpclient"
	"github.com/rs/zerolog"
)

// Finishing: numbers of finisher goroutines and of entries waiting for one.
const (
	finishers     = 64
	deferrers     = 16    // of the finishers, how many also take untried deferrals
	finishBacklog = 25000 // above the consumer's MaxAckPending: never blocks a worker
	ackTimeout    = 30 * time.Second
	// retriedRoomWait: an entry an operator retried that found no room in
	// its destination's queue is tried again after 1 to 2 times this.
	retriedRoomWait = 30 * time.Second
)

// finisher settles attempts: events, reporter calls, then the entry's
// fate (Done, Defer, Park or Release), on a pool of goroutines so that a
// worker's connection goes on with the next entry while JetStream records
// the last one.
type finisher struct {
	log       zerolog.Logger
	rt        *atomic.Pointer[runtime]
	ev        *events.Emitter
	rep       Reporter
	pace      *pacer
	park      *parker
	leases    *leases
	finishing chan *finishJob // results of attempts
	deferring chan *finishJob // entries deferred without connecting
	wg        sync.WaitGroup
}

// finishJob is an attempt's result on its way to the queue: events,
// reporter, then Done or Defer.
type finishJob struct {
	j        *job
	body     []byte // nil when not read (deferred without connecting)
	replies  []outcome.Reply
	conn     smtpclient.ConnInfo
	rconn    []smtpclient.ConnInfo // per recipient (envelope order) when they differ; nil: conn
	start    time.Time
	end      time.Time
	untried  bool // deferred without an attempt to connect: no attempt counted (plan, untriedEnv)
	releaseR bool // shutdown: hand the lease back
	// notBefore: an untried entry's destination is marked down until then.
	notBefore time.Time
	// waiting: an untried entry waits for shaping (queue ls mark).
	waiting string
	source  string // the egress source of the attempt's connection ("" = none)
}

// start starts the finisher pool. Results of real attempts go first
// (their ack closes the duplicate window); entries deferred without
// connecting wait in a second line, so a flood of them never delays an ack.
func (f *finisher) start() {
	f.finishing = make(chan *finishJob, finishBacklog)
	f.deferring = make(chan *finishJob, finishBacklog)
	for i := range finishers {
		f.wg.Add(1)
		lo := f.deferring
		if i >= deferrers {
			lo = nil // most finishers only ever ack attempts
		}
		go func() { defer f.wg.Done(); f.loop(f.finishing, lo) }()
	}
}

// loop completes jobs, those of hi first, until both channels are closed.
func (f *finisher) loop(hi, lo chan *finishJob) {
	for hi != nil || lo != nil {
		select {
		case fj, ok := <-hi:
			if !ok {
				hi = nil
				continue
			}
			f.safeComplete(fj)
			continue
		default:
		}
		select {
		case fj, ok := <-hi:
			if !ok {
				hi = nil
				continue
			}
			f.safeComplete(fj)
		case fj, ok := <-lo:
			if !ok {
				lo = nil
				continue
			}
			f.safeComplete(fj)
		}
	}
}

// safeComplete completes fj; a panic is logged and the lease handed back
// (the entry is delivered again), never lost, and the finisher lives on.
func (f *finisher) safeComplete(fj *finishJob) {
	defer func() {
		if p := recover(); p != nil {
			en := fj.j.en
			f.log.Error().Str("event", "finish_panic").Str("queue_id", en.Env.ID).Interface("panic", p).
				Bytes("stack", debug.Stack()).Msg("settling a result panicked; the entry is released")
			f.leases.remove(en)
			_ = en.Nak()
		}
	}()
	f.complete(fj)
}

// stop closes the lines and waits for the pool to drain them.
func (f *finisher) stop() {
	close(f.finishing)
	close(f.deferring)
	f.wg.Wait()
}

// finish hands a result to the finishers, so that the worker's connection
// goes on with the next entry while the queue is updated.
func (f *finisher) finish(fj *finishJob) {
	if fj.untried {
		f.deferring <- fj
		return
	}
	f.finishing <- fj
}

// deferUntried defers a job that was not attempted (queue full, waited
// too long, no TLS policy) with reply r: no attempt is counted.
func (f *finisher) deferUntried(j *job, r outcome.Reply) { f.deferDown(j, r, time.Time{}) }

// deferDown defers a job without an attempt because its destination is
// marked down (circuit breaker, sched.go) until until.
func (f *finisher) deferDown(j *job, r outcome.Reply, until time.Time) {
	now := time.Now()
	f.finish(&finishJob{j: j, replies: fill(len(j.en.Env.Rcpts), r), conn: smtpclient.ConnInfo{TLS: "none"},
		start: now, end: now, untried: true, notBefore: until})
}

// deferShaped defers a job without an attempt because shaping makes its
// destination wait (shape.go) until until, marked why for queue ls.
func (f *finisher) deferShaped(j *job, why string, until time.Time) {
	now := time.Now()
	f.finish(&finishJob{j: j, replies: fill(len(j.en.Env.Rcpts), replyShaped.WithCause(why)),
		conn: smtpclient.ConnInfo{TLS: "none"}, start: now, end: now, untried: true, notBefore: until, waiting: why})
}

// deferBroken defers a job whose attempt broke down (a panic) with reply
// r: the attempt may have connected, so it counts.
func (f *finisher) deferBroken(j *job, r outcome.Reply) {
	now := time.Now()
	f.finish(&finishJob{j: j, replies: fill(len(j.en.Env.Rcpts), r), conn: smtpclient.ConnInfo{TLS: "none"},
		start: now, end: now})
}

// release hands a job's lease back for immediate redelivery (shutdown).
func (f *finisher) release(j *job) { f.finish(&finishJob{j: j, releaseR: true}) }

// outcomes sorts the recipients of an attempt.
type outcomes struct {
	delivered, deferred, failed, relayed []outcome.Result
}

// complete turns an attempt's replies into events, reporter calls and the
// entry's fate: Done when nothing is left, else Defer with the remaining
// recipients at the next retry time; after retry.max_age the remaining
// recipients fail with their last temporary reply.
func (f *finisher) complete(fj *finishJob) {
	en := fj.j.en
	defer f.leases.remove(en)
	ctx, cancel := context.WithTimeout(context.Background(), ackTimeout)
	defer cancel()
	if fj.releaseR {
		if err := en.Nak(); err != nil {
			f.log.Warn().Err(err).Str("queue_id", en.Env.ID).Msg("release failed; redelivered after AckWait")
		}
		return
	}
	rt := f.rt.Load()
	env := en.Env
	o := f.sort(fj)
	expired := len(o.deferred) > 0 && fj.end.Sub(env.Arrival) >= rt.set.Retry.MaxAge.D()
	if expired {
		for i := range o.deferred {
			o.deferred[i].Status = outcome.Failed
		}
		o.failed, o.deferred = append(o.failed, o.deferred...), nil
	}
	parkUntil, park, next := f.plan(fj, o)
	keep := f.report(ctx, fj, o)
	f.emit(fj, o, keep, next)
	remaining := append(slices.Clone(o.deferred), keep...)
	if env.Probe && len(o.delivered) > 0 {
		f.park.wakeAll(ctx, env.Domain)
	}
	if len(remaining) == 0 {
		if err := en.Done(ctx); err != nil {
			f.log.Error().Err(err).Str("queue_id", env.ID).Str("domain", env.Domain).
				Msg("ack failed; the entry is delivered again after AckWait")
		}
		return
	}
	renv := remainingEnv(en.Env, remaining)
	if fj.untried {
		renv = untriedEnv(en.Env, remaining)
		renv.Waiting = fj.waiting
	}
	if park && len(keep) == 0 {
		f.park.park(ctx, en, renv, parkTimes{due: parkUntil, wakeAt: next})
		return
	}
	f.deferEntry(ctx, en, renv, next)
}

// plan decides where the deferred recipients of fj go: a failing
// destination's entry is parked (park.go) when it can be; otherwise its
// retry is paced (a parked entry takes no pacer slot). Only attempts
// count towards a destination failing; an untried entry only learns
// whether it is failing already.
func (f *finisher) plan(fj *finishJob, o outcomes) (parkUntil time.Time, park bool, next time.Time) {
	env := fj.j.en.Env
	paced := false
	if key := fj.j.key; key != "" && fj.untried {
		paced = f.pace.failing(key)
	} else if key != "" {
		var change paceChange
		paced, change = f.pace.observe(key, len(o.delivered) > 0, fj.end)
		f.logPaceChange(key, change, fj.replies)
	}
	if paced && len(o.deferred) > 0 {
		parkUntil, park = f.park.due(env, fj.end)
	}
	usePace := paced && len(o.deferred) > 0 && !park
	if fj.untried {
		return parkUntil, park, f.untriedNext(env, fj, usePace)
	}
	return parkUntil, park, f.nextAttempt(env, fj.end, usePace)
}

// sort classifies each recipient's reply (RFC 5321 §4.2.1: 2xx done, 4xx
// retried, 5xx failed).
func (f *finisher) sort(fj *finishJob) outcomes {
	var o outcomes
	for i, rc := range fj.j.en.Env.Rcpts {
		r, conn := fj.replies[i], fj.connOf(i)
		res := outcome.Result{Rcpt: rc, Reply: r, MX: conn.MX, IP: conn.IP, Time: fj.end, Temporary: r.Temporary()}
		switch {
		case r.OK():
			res.Status = outcome.Delivered
			o.delivered = append(o.delivered, res)
			if wantsSuccess(rc) && !conn.DSN {
				o.relayed = append(o.relayed, res)
			}
		case r.Temporary():
			res.Status = outcome.Deferred
			o.deferred = append(o.deferred, res)
		default:
			res.Status = outcome.Failed
			o.failed = append(o.failed, res)
		}
	}
	return o
}

// connOf is the connection recipient i's transaction used.
func (fj *finishJob) connOf(i int) smtpclient.ConnInfo {
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
func (f *finisher) report(ctx context.Context, fj *finishJob, o outcomes) []outcome.Result {
	if f.rep == nil || (len(o.failed) == 0 && len(o.relayed) == 0 && !f.delayDue(fj, o)) {
		return nil
	}
	env := fj.j.en.Env
	body := fj.body
	if body == nil {
		b, err := fj.j.en.Body(ctx)
		if err != nil {
			f.log.Error().Err(err).Str("queue_id", env.ID).Msg("reading the body for the reporter")
			return o.failed
		}
		body = b
	}
	var keep []outcome.Result
	if len(o.failed) > 0 {
		if err := f.rep.Failed(ctx, env, body, o.failed); err != nil {
			f.log.Error().Err(err).Str("queue_id", env.ID).Msg("reporting failures; the recipients stay queued")
			keep = o.failed
		}
	}
	if len(o.relayed) > 0 {
		if err := f.rep.Relayed(ctx, env, body, o.relayed); err != nil {
			// The mail was delivered: sending it again would be worse than
			// a missing "relayed" notice.
			f.log.Error().Err(err).Str("queue_id", env.ID).Msg("reporting relayed recipients; notice lost")
		}
	}
	if f.delayDue(fj, o) {
		if err := f.rep.Delayed(ctx, env, body, o.deferred); err == nil {
			fj.j.en.Env.DelayNotified = true
		} else {
			f.log.Warn().Err(err).Str("queue_id", env.ID).Msg("delay notice failed; tried again next attempt")
		}
	}
	return keep
}

func (f *finisher) delayDue(fj *finishJob, o outcomes) bool {
	after := f.rt.Load().set.DelayNoticeAfter
	env := fj.j.en.Env
	return after > 0 && len(o.deferred) > 0 && !env.DelayNotified && fj.end.Sub(env.Arrival) >= after
}

// deferEntry re-schedules the entry as env (its remaining recipients).
func (f *finisher) deferEntry(ctx context.Context, en *queue.Entry, env *queue.Envelope, next time.Time) {
	if err := en.Defer(ctx, env, next); err != nil {
		f.log.Error().Err(err).Str("queue_id", env.ID).Str("domain", env.Domain).
			Msg("defer failed; the entry is delivered again after AckWait")
	}
}

// nextAttempt is now + retry.schedule[attempt] (the last interval
// repeating) ± 10% jitter — placed by the pacer when the destination is
// failing (pace.go) — but no later than the entry's max_age.
func (f *finisher) nextAttempt(env *queue.Envelope, now time.Time, paced bool) time.Time {
	rt := f.rt.Load()
	d := retryDelay(rt.schedule, env.Attempt, rand.Float64())
	return f.placeNext(env, now, now.Add(d), paced)
}

// untriedNext is the next attempt of an entry deferred without one: it
// waits the interval it last waited again (retry.schedule[attempt-1], the
// first for an entry never tried), not the next one, and no earlier than
// its destination's breaker half-opens (spread over a tenth of the time
// until then). An entry an operator retried that was deferred for
// another reason than a down mark (no room, mostly) comes back after
// retriedRoomWait instead.
// Paced and capped at max_age like nextAttempt.
func (f *finisher) untriedNext(env *queue.Envelope, fj *finishJob, paced bool) time.Time {
	now := fj.end
	if fj.waiting != "" {
		return f.shapedNext(env, fj)
	}
	next := now.Add(retryDelay(f.rt.Load().schedule, env.Attempt-1, rand.Float64()))
	if !env.Retried.IsZero() && fj.notBefore.IsZero() {
		next = now.Add(retriedRoomWait + time.Duration(rand.Int64N(int64(retriedRoomWait))))
	}
	if until := fj.notBefore; next.Before(until) {
		next = until.Add(time.Duration(rand.Int64N(int64(until.Sub(now)/10) + 1)))
	}
	return f.placeNext(env, now, next, paced)
}

// shapedNext is when an entry deferred for shaping is due again: when
// the wait ends (no earlier than shapedMinWait from now, spread over a
// tenth of the wait), not a retry interval later — it waits in the
// queue, it is not retried. Capped at max_age like every deferral.
func (f *finisher) shapedNext(env *queue.Envelope, fj *finishJob) time.Time {
	now := fj.end
	until := now.Add(shapedMinWait)
	if fj.notBefore.After(until) {
		until = fj.notBefore
	}
	next := until.Add(time.Duration(rand.Int64N(int64(until.Sub(now)/10) + 1)))
	return f.placeNext(env, now, next, false)
}

// shapedMinWait is the shortest wait of an entry deferred for shaping.
const shapedMinWait = 5 * time.Second

// placeNext places next with the pacer when paced, no later than env's
// max_age.
func (f *finisher) placeNext(env *queue.Envelope, now, next time.Time, paced bool) time.Time {
	rt := f.rt.Load()
	if paced {
		next = f.pace.place(next)
	}
	if expiry := env.Arrival.Add(rt.set.Retry.MaxAge.D()); next.After(expiry) && expiry.After(now) {
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
func (f *finisher) emit(fj *finishJob, o outcomes, keep []outcome.Result, next time.Time) {
	env := fj.j.en.Env
	dur := fj.end.Sub(fj.start).Milliseconds()
	all := slices.Concat(o.delivered, o.deferred, o.failed)
	for _, r := range all {
		conn := fj.conn
		if fj.rconn != nil {
			conn = fj.connOf(slices.IndexFunc(env.Rcpts, func(rc queue.Recipient) bool { return rc.Addr == r.Rcpt.Addr }))
		}
		ev := &events.Event{Time: fj.end, Event: events.Delivery, QueueID: env.ID, MsgID: env.MsgID,
			Rcpt: r.Rcpt.Addr, Domain: env.Domain, MX: conn.MX, IP: conn.IP, Port: conn.Port,
			TLS: conn.TLS, TLSPolicy: conn.TLSPolicy, TLSFailure: conn.TLSFailure, TLSCipher: conn.Cipher, TLSVerified: events.Bool(conn.Verified),
			Attempt: attemptNo(fj), Status: string(r.Status), SMTPCode: r.Code, SMTPEnh: r.Enh, Reply: r.Text,
			DurationMS: dur, Arrival: env.Arrival, Source: fj.source}
		if r.Status == outcome.Deferred || (r.Status == outcome.Failed && slices.ContainsFunc(keep,
			func(k outcome.Result) bool { return k.Rcpt.Addr == r.Rcpt.Addr })) {
			ev.NextAttempt = &next
		}
		if fj.untried {
			ev.Reason = "not_attempted"
		}
		ev.User = env.User // whose mail: relay/stats counts per user
		f.ev.Emit(ev)
	}
}

// attemptNo is the attempt number fj's events carry: the attempts made
// so far, plus this one unless none was made.
func attemptNo(fj *finishJob) int {
	if fj.untried {
		return fj.j.en.Env.Attempt
	}
	return fj.j.en.Env.Attempt + 1
}

// logPaceChange says when a destination starts or stops counting as
// failing (its retries paced, pace.go).
func (f *finisher) logPaceChange(key string, change paceChange, replies []outcome.Reply) {
	switch change {
	case paceFailing:
		ev := f.log.Warn().Str("event", "destination_failing").Str("destination", key).Int("attempts", paceAfter).
			Str("pace", f.rt.Load().set.Retry.Pace.Source)
		if len(replies) > 0 {
			ev = ev.Str("reply", replies[0].String())
		}
		ev.Msg("nothing delivered in the last attempts; its retries are paced")
	case paceRecovered:
		f.log.Info().Str("event", "destination_recovered").Str("destination", key).
			Msg("delivering again; new retries follow the schedule")
	}
}
