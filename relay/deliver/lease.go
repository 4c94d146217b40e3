package deliver

import (
	"context"
	"sync"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/rs/zerolog"
)

// Lease timing (see the package comment, "Leases and shutdown").
const (
	// heartbeatShare: a lease is renewed once it is this share of AckWait
	// old, so three renewals can be lost before it expires.
	heartbeatShare = 4
	// maxHeartbeatTick bounds the heartbeat loop's period (it is a quarter
	// of the renewal period when that is shorter).
	maxHeartbeatTick = time.Second
)

// leases tracks every entry this process holds, from the moment it is
// pulled to its final ack, and keeps each lease alive with InProgress
// heartbeats while it waits in a destination queue, is being delivered,
// or waits to be acked. Only entries held longer than a renewal period
// are renewed: most entries are done long before, and on a replicated
// consumer each renewal is a Raft proposal (queue.Entry.InProgress).
type leases struct {
	mu    sync.Mutex
	m     map[*queue.Entry]time.Time // when its lease was last (re)started, at the latest
	every time.Duration              // renewal period: AckWait / heartbeatShare
}

func newLeases() *leases {
	return &leases{m: map[*queue.Entry]time.Time{}, every: queue.AckWait / heartbeatShare}
}

// setAckWait sets the renewal period from the consumer's AckWait
// (queue.Entries.AckWait).
func (l *leases) setAckWait(d time.Duration) {
	l.mu.Lock()
	l.every = max(d/heartbeatShare, time.Millisecond)
	l.mu.Unlock()
}

// add starts tracking en, whose lease started no earlier than since (the
// server starts it when it sends the entry; see arrivals). An entry that
// may already be a renewal period old is renewed at once.
func (l *leases) add(en *queue.Entry, since time.Time) {
	now := time.Now()
	l.mu.Lock()
	renew := now.Sub(since) >= l.every
	if renew {
		since = now
	}
	l.m[en] = since
	l.mu.Unlock()
	if renew {
		_ = en.InProgress()
	}
}

func (l *leases) remove(en *queue.Entry) {
	l.mu.Lock()
	delete(l.m, en)
	l.mu.Unlock()
}

// beat renews en's lease now if it is due, rather than at the next tick:
// a fresh lease for the transaction about to start.
func (l *leases) beat(en *queue.Entry) {
	now := time.Now()
	l.mu.Lock()
	last, ok := l.m[en]
	renew := ok && now.Sub(last) >= l.every
	if renew {
		l.m[en] = now
	}
	l.mu.Unlock()
	if renew {
		_ = en.InProgress()
	}
}

// due returns the entries whose lease is a renewal period old, marking
// them renewed at now.
func (l *leases) due(now time.Time) []*queue.Entry {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []*queue.Entry
	for en, last := range l.m {
		if now.Sub(last) >= l.every {
			out = append(out, en)
			l.m[en] = now
		}
	}
	return out
}

// run renews due leases until ctx ends. A renewal that fails (JetStream
// away) is not retried or logged: the next period tries again, and an
// entry whose lease did expire is only delivered by another node too.
func (l *leases) run(ctx context.Context) {
	t := time.NewTimer(l.tick())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			for _, en := range l.due(now) {
				_ = en.InProgress()
			}
			t.Reset(l.tick())
		}
	}
}

// tick is the heartbeat loop's period: a quarter of the renewal period,
// at most maxHeartbeatTick.
func (l *leases) tick() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return min(maxHeartbeatTick, l.every/4)
}

// Len is the number of entries held.
func (l *leases) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}

// arrivals bounds how long an entry sat pulled in the iterator's buffer
// before Next returned it, without seeing the buffer: it holds at most
// prefetch entries and hands them out in order, so an entry Next returns
// arrived after the return prefetch returns earlier (else the buffer
// would have held more than prefetch entries at once). Its lease is
// therefore no older than that. While entries flow that is a fraction of
// a second; when the dispatcher stalls (a full destination queue makes
// it wait) it grows, and leases.add renews such entries at once.
type arrivals struct {
	ring []time.Time // the last len(ring) returns of Next
	i    int
}

// newArrivals tracks a fresh iterator of prefetch entries started at
// start: nothing arrived before.
func newArrivals(prefetch int, start time.Time) *arrivals {
	a := &arrivals{ring: make([]time.Time, max(prefetch, 1))}
	for i := range a.ring {
		a.ring[i] = start
	}
	return a
}

// next records a return of Next at now and returns the earliest time the
// entry it returned can have arrived.
func (a *arrivals) next(now time.Time) time.Time {
	since := a.ring[a.i]
	a.ring[a.i] = now
	a.i = (a.i + 1) % len(a.ring)
	return since
}

// Leasing again after a failure (Engine.pull).
const (
	leaseRetryMin = time.Second
	leaseRetryMax = 30 * time.Second
	// outageReminder is how often a lasting pause is logged again.
	outageReminder = 5 * time.Minute
)

// outage logs a pause in leasing when it starts, every outageReminder
// while it lasts and when entries come again, rather than every failed
// pull: JetStream without quorum fails a pull every few seconds.
type outage struct {
	since, logged time.Time
	errs          int
}

func (o *outage) failed(log zerolog.Logger, err error) {
	now := time.Now()
	o.errs++
	switch {
	case o.since.IsZero():
		o.since, o.logged = now, now
		log.Warn().Err(err).Str("event", "delivery_paused").
			Msg("JetStream is not handing out queue entries; delivery pauses until it does")
	case now.Sub(o.logged) >= outageReminder:
		o.logged = now
		log.Warn().Err(err).Str("event", "delivery_paused").Int64("duration_ms", now.Sub(o.since).Milliseconds()).
			Int("errors", o.errs).Msg("delivery still paused: JetStream is not handing out queue entries")
	default:
		log.Debug().Err(err).Str("event", "lease_error").Msg("leasing queue entries")
	}
}

// resumed ends a pause: an entry was leased.
func (o *outage) resumed(log zerolog.Logger) {
	if o.since.IsZero() {
		return
	}
	log.Info().Str("event", "delivery_resumed").Int64("duration_ms", time.Since(o.since).Milliseconds()).
		Int("errors", o.errs).Msg("leasing queue entries again")
	*o = outage{}
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
