package deliver

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/jetrelay/jetrelay/queue"
)

// Parking the entries of failing destinations (queue/park.go has the
// storage side).
//
// Once a destination counts as failing (pace.go: paceAfter attempts in a
// row delivered nothing), an entry it defers again is parked with its
// domain's other entries instead of getting a schedule of its own, which
// costs nats-server ~500 bytes of memory per waiting entry. The domain gets
// one wake-up; its handler (handleWake) unparks one entry as a probe, plus
// every entry whose own deadline came (delay notice, retry.max_age), and
// schedules the next wake-up after the retry schedule's next interval
// (counting failed probes). When a probe is delivered, the rest of the
// domain is unparked in batches of unparkBatch a second.
//
// Entries are not parked when their own deadline is near (parkMinLead),
// and neither are those whose body is stored in chunks: they keep their
// own schedules.
const (
	// parkMinLead: an entry due for its own attempt sooner than this keeps
	// its own schedule.
	parkMinLead = 3 * queue.ParkGrain
	// unparkBatch: entries one "all" wake-up moves to the ready queue; the
	// next batch follows a second later.
	unparkBatch = 1000
	// wakeCheckEvery: how often delivery makes sure every parked domain
	// has a wake-up (after a crash, or an operator removed it).
	wakeCheckEvery = 5 * time.Minute
	// wakeRetry: a wake-up whose handling failed is tried again after this.
	wakeRetry = 30 * time.Second
	// wakeAllGap: delivered probes of one domain ask for it to be
	// unparked at most once in this interval (per process).
	wakeAllGap = 10 * time.Second
)

// parkDue says whether an entry deferred at now may be parked, and until
// when: its delay notice (when one is still to be sent) or its expiry.
func (e *Engine) parkDue(env *queue.Envelope, now time.Time) (time.Time, bool) {
	if env.Chunks > 0 {
		return time.Time{}, false
	}
	cfg := e.rt.Load().cfg
	due := env.Arrival.Add(cfg.Delivery.Retry.MaxAge.D())
	if after := cfg.Bounces.DelayNoticeAfter.D(); after > 0 && !env.DelayNotified && !env.IsDSN {
		if t := env.Arrival.Add(after); t.Before(due) {
			due = t
		}
	}
	if due.Sub(now) < parkMinLead {
		return time.Time{}, false
	}
	return due, true
}

// parkEntry parks the entry with only the remaining recipients.
func (e *Engine) parkEntry(ctx context.Context, en *queue.Entry, remaining []Result, due, wakeAt time.Time) {
	env := remainingEnv(en.Env, remaining)
	if err := en.Park(ctx, env, due, wakeAt); err != nil {
		e.log.Error().Err(err).Str("queue_id", env.ID).Str("domain", env.Domain).
			Msg("park failed; the entry is delivered again after AckWait")
	}
}

// wakeAll asks for the rest of a domain to be unparked: one of its probes
// was delivered. Several probes delivered together ask once.
func (e *Engine) wakeAll(ctx context.Context, domain string) {
	now := time.Now()
	e.unparkMu.Lock()
	if last, ok := e.unparking[domain]; ok && now.Sub(last) < wakeAllGap {
		e.unparkMu.Unlock()
		return
	}
	for d, last := range e.unparking { // forget old requests
		if now.Sub(last) >= wakeAllGap {
			delete(e.unparking, d)
		}
	}
	e.unparking[domain] = now
	e.unparkMu.Unlock()
	if err := e.q.ScheduleWake(ctx, queue.Wake{Domain: domain, All: true}, time.Now()); err != nil {
		e.log.Warn().Err(err).Str("event", "wake_failed").Str("domain", domain).
			Msg("could not ask for the parked entries of a recovered domain; they follow at the next probe")
		return
	}
	e.log.Info().Str("event", "domain_unparking").Str("domain", domain).
		Msg("a probe was delivered; unparking the domain's entries")
}

// handleWake handles a parked domain's wake-up (leased like an entry).
func (e *Engine) handleWake(en *queue.Entry) {
	w := en.Wake
	// Half the lease: a batch of unparks is two synchronous writes each.
	ctx, cancel := context.WithTimeout(context.Background(), queue.AckWait/2)
	defer cancel()
	now := time.Now()
	extra, upTo := 1, uint64(0)
	if w.All {
		extra, upTo = unparkBatch, w.UpTo
		if upTo == 0 { // everything parked before the wake-up is handled
			last, err := e.q.ParkedLastSeq(ctx)
			if err != nil {
				e.log.Error().Err(err).Str("event", "unpark_failed").Str("domain", w.Domain).
					Msg("reading the park stream failed; the wake-up is tried again")
				_ = en.NakWithDelay(wakeRetry)
				return
			}
			upTo = max(last, 1)
		}
	}
	res, err := e.q.Unpark(ctx, w.Domain, now, extra, upTo, !w.All)
	if err != nil {
		e.log.Error().Err(err).Str("event", "unpark_failed").Str("domain", w.Domain).Int("moved", res.Moved).
			Msg("unparking failed; the wake-up is tried again")
		_ = en.NakWithDelay(wakeRetry)
		return
	}
	var next queue.Wake
	var at time.Time
	if res.Left > 0 {
		if w.All && res.More {
			next, at = queue.Wake{Domain: w.Domain, All: true, UpTo: upTo}, now.Add(time.Second)
		} else {
			probes := 0
			if !w.All {
				probes = w.Probes + 1
			}
			next = queue.Wake{Domain: w.Domain, Probes: probes}
			at = now.Add(retryDelay(e.rt.Load().schedule, probes, rand.Float64()))
			if !res.NextDue.IsZero() && res.NextDue.Before(at) {
				at = res.NextDue
			}
		}
		if err := e.q.ScheduleWake(ctx, next, at); err != nil {
			e.log.Error().Err(err).Str("event", "unpark_failed").Str("domain", w.Domain).
				Msg("could not schedule the next wake-up; this one is tried again")
			_ = en.NakWithDelay(wakeRetry)
			return
		}
	}
	ev := e.log.Info().Str("event", "domain_wakeup").Str("domain", w.Domain).Bool("all", w.All).
		Int("unparked", res.Moved).Int("parked", res.Left)
	if !at.IsZero() {
		ev = ev.Time("next_wakeup", at)
	}
	ev.Msg("parked domain woken")
	if err := en.Done(ctx); err != nil {
		e.log.Warn().Err(err).Str("domain", w.Domain).Msg("wake-up not acknowledged; it comes back after AckWait")
	}
}

// checkWakes makes sure every parked domain has a wake-up.
func (e *Engine) checkWakes(ctx context.Context, now time.Time) {
	made, err := e.q.EnsureWakes(ctx, now.Add(time.Minute))
	if err != nil {
		e.log.Warn().Err(err).Str("event", "wake_check_failed").Msg("checking the wake-ups of parked domains")
	}
	for _, d := range made {
		e.log.Warn().Str("event", "wake_repaired").Str("domain", d).
			Msg("a parked domain had no wake-up; one is scheduled in a minute")
	}
}

// remainingEnv is a copy of env with only the remaining recipients, one
// more attempt counted and the first remaining reply as the last one.
func remainingEnv(env *queue.Envelope, remaining []Result) *queue.Envelope {
	out := *env
	out.Rcpts = make([]queue.Recipient, len(remaining))
	for i, r := range remaining {
		out.Rcpts[i] = r.Rcpt
	}
	out.Attempt++
	r := remaining[0]
	out.LastReply = queue.Reply{Code: r.Code, Enh: r.Enh, Text: r.Reply, MX: r.MX}
	return &out
}
