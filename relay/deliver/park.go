package deliver

import (
	"context"
	"math/rand/v2"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/outcome"
	"github.com/rs/zerolog"
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
	// wakeBudget bounds one wake-up's handling (a batch of unparks is two
	// synchronous writes each); its lease is renewed meanwhile (leases).
	wakeBudget = time.Minute
)

// parker owns the parking policy: which deferred entries are parked,
// when a parked domain wakes, how many entries a wake-up moves and which
// are probes. queue does the storage operations it asks for.
type parker struct {
	log       zerolog.Logger
	q         *queue.Queue
	rt        *atomic.Pointer[runtime]
	wakes     sync.WaitGroup // wake-up handlers running
	mu        sync.Mutex
	unparking map[string]time.Time // domain -> when its unparking was asked for
}

func newParker(log zerolog.Logger, q *queue.Queue, rt *atomic.Pointer[runtime]) *parker {
	return &parker{log: log, q: q, rt: rt, unparking: map[string]time.Time{}}
}

// wake handles a domain's wake-up (leased like an entry) in a goroutine of
// its own, then calls done; a panic in it is logged and the wake-up retried.
func (p *parker) wake(en *queue.Entry, done func()) {
	p.wakes.Add(1)
	go func() {
		defer p.wakes.Done()
		defer done()
		defer func() {
			if r := recover(); r != nil {
				p.log.Error().Str("event", "wake_panic").Str("domain", en.Wake.Domain).Interface("panic", r).
					Bytes("stack", debug.Stack()).Msg("handling a wake-up panicked; it is tried again")
				_ = en.NakWithDelay(wakeRetry)
			}
		}()
		p.handleWake(en)
	}()
}

// wait waits for the wake-up handlers.
func (p *parker) wait() { p.wakes.Wait() }

// due says whether an entry deferred at now may be parked, and until
// when: its delay notice (when one is still to be sent) or its expiry.
func (p *parker) due(env *queue.Envelope, now time.Time) (time.Time, bool) {
	if env.Chunks > 0 {
		return time.Time{}, false
	}
	set := p.rt.Load().set
	due := env.Arrival.Add(set.Retry.MaxAge.D())
	if after := set.DelayNoticeAfter; after > 0 && !env.DelayNotified && !env.IsDSN {
		if t := env.Arrival.Add(after); t.Before(due) {
			due = t
		}
	}
	if due.Sub(now) < parkMinLead {
		return time.Time{}, false
	}
	return due, true
}

// parkTimes are a parked entry's own deadline (due: its delay notice or
// expiry) and its domain's next wake-up.
type parkTimes struct{ due, wakeAt time.Time }

// park parks the entry as env (its remaining recipients).
func (p *parker) park(ctx context.Context, en *queue.Entry, env *queue.Envelope, at parkTimes) {
	if err := en.Park(ctx, env, at.due, at.wakeAt); err != nil {
		p.log.Error().Err(err).Str("queue_id", env.ID).Str("domain", env.Domain).
			Msg("park failed; the entry is delivered again after AckWait")
	}
}

// wakeAll asks for the rest of a domain to be unparked: one of its probes
// was delivered. Several probes delivered together ask once.
func (p *parker) wakeAll(ctx context.Context, domain string) {
	now := time.Now()
	p.mu.Lock()
	if last, ok := p.unparking[domain]; ok && now.Sub(last) < wakeAllGap {
		p.mu.Unlock()
		return
	}
	for d, last := range p.unparking { // forget old requests
		if now.Sub(last) >= wakeAllGap {
			delete(p.unparking, d)
		}
	}
	p.unparking[domain] = now
	p.mu.Unlock()
	if err := p.q.ScheduleWake(ctx, queue.Wake{Domain: domain, All: true}, time.Now()); err != nil {
		p.log.Warn().Err(err).Str("event", "wake_failed").Str("domain", domain).
			Msg("could not ask for the parked entries of a recovered domain; they follow at the next probe")
		return
	}
	p.log.Info().Str("event", "domain_unparking").Str("domain", domain).
		Msg("a probe was delivered; unparking the domain's entries")
}

// handleWake handles a parked domain's wake-up (leased like an entry):
// it unparks what unparkOptions says, schedules the next wake-up while
// entries are left, and acknowledges the wake-up. A failed step retries
// the wake-up after wakeRetry.
func (p *parker) handleWake(en *queue.Entry) {
	w := en.Wake
	ctx, cancel := context.WithTimeout(context.Background(), wakeBudget)
	defer cancel()
	now := time.Now()
	fail := func(err error, msg string) {
		p.log.Error().Err(err).Str("event", "unpark_failed").Str("domain", w.Domain).Msg(msg)
		_ = en.NakWithDelay(wakeRetry)
	}
	o, err := p.unparkOptions(ctx, w, now)
	if err != nil {
		fail(err, "reading the park stream failed; the wake-up is tried again")
		return
	}
	res, err := p.q.Unpark(ctx, o)
	if err != nil {
		fail(err, "unparking failed; the wake-up is tried again")
		return
	}
	var at time.Time
	if res.Left > 0 {
		var next queue.Wake
		next, at = p.nextWake(w, res, o.UpTo, now)
		if err := p.q.ScheduleWake(ctx, next, at); err != nil {
			fail(err, "could not schedule the next wake-up; this one is tried again")
			return
		}
	}
	ev := p.log.Info().Str("event", "domain_wakeup").Str("domain", w.Domain).Bool("all", w.All).
		Int("unparked", res.Moved).Int("parked", res.Left)
	if !at.IsZero() {
		ev = ev.Time("next_wakeup", at)
	}
	ev.Msg("parked domain woken")
	if err := en.Done(ctx); err != nil {
		p.log.Warn().Err(err).Str("domain", w.Domain).Msg("wake-up not acknowledged; it comes back after AckWait")
	}
}

// unparkOptions is the policy of one wake-up: a probe wake-up moves the
// due entries plus one probe; an "all" wake-up (a probe was delivered)
// moves up to unparkBatch of everything parked before it began.
func (p *parker) unparkOptions(ctx context.Context, w *queue.Wake, now time.Time) (queue.UnparkOptions, error) {
	o := queue.UnparkOptions{Domain: w.Domain, Now: now, Extra: 1, MarkProbe: !w.All}
	if !w.All {
		return o, nil
	}
	o.Extra, o.UpTo = unparkBatch, w.UpTo
	if o.UpTo == 0 { // everything parked before the wake-up is handled
		last, err := p.q.ParkedLastSeq(ctx)
		if err != nil {
			return o, err
		}
		o.UpTo = max(last, 1)
	}
	return o, nil
}

// nextWake is the wake-up after w: the next batch a second later, or the
// next probe after the retry schedule's interval for the probes so far
// (earlier when a parked entry's own deadline comes first).
func (p *parker) nextWake(w *queue.Wake, res queue.UnparkResult, upTo uint64, now time.Time) (queue.Wake, time.Time) {
	if w.All && res.More {
		return queue.Wake{Domain: w.Domain, All: true, UpTo: upTo}, now.Add(time.Second)
	}
	probes := 0
	if !w.All {
		probes = w.Probes + 1
	}
	at := now.Add(retryDelay(p.rt.Load().schedule, probes, rand.Float64()))
	if !res.NextDue.IsZero() && res.NextDue.Before(at) {
		at = res.NextDue
	}
	return queue.Wake{Domain: w.Domain, Probes: probes}, at
}

// checkWakes makes sure every parked domain has a wake-up.
func (p *parker) checkWakes(ctx context.Context, now time.Time) {
	made, err := p.q.EnsureWakes(ctx, now.Add(time.Minute))
	if err != nil {
		p.log.Warn().Err(err).Str("event", "wake_check_failed").Msg("checking the wake-ups of parked domains")
	}
	for _, d := range made {
		p.log.Warn().Str("event", "wake_repaired").Str("domain", d).
			Msg("a parked domain had no wake-up; one is scheduled in a minute")
	}
}

// remainingEnv is a copy of env with only the remaining recipients, one
// more attempt counted and the first remaining reply as the last one.
func remainingEnv(env *queue.Envelope, remaining []outcome.Result) *queue.Envelope {
	out := *env
	out.Rcpts = make([]queue.Recipient, len(remaining))
	for i, r := range remaining {
		out.Rcpts[i] = r.Rcpt
	}
	out.Attempt++
	r := remaining[0]
	out.LastReply = outcome.ToStored(r.Reply, r.MX)
	return &out
}

// untriedEnv is remainingEnv for an entry deferred without an attempt:
// the attempt count stays, and so does the last reply of a real attempt.
func untriedEnv(env *queue.Envelope, remaining []outcome.Result) *queue.Envelope {
	out := remainingEnv(env, remaining)
	out.Attempt = env.Attempt
	if env.LastReply != (queue.Reply{}) {
		out.LastReply = env.LastReply
	}
	return out
}
