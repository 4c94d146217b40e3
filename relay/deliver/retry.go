package deliver

import (
	"context"
	"time"

	"github.com/jetrelay/jetrelay/queue"
)

// Operator retries ("jetrelay queue retry", relay/ops) mean now.
//
// This process keeps two marks of a destination in memory: its circuit
// breaker (sched.go: "down", its entries deferred without connecting) and
// its run of failed attempts (pace.go: "failing", its entries paced or
// parked). A retry clears both wherever they are older than the retry:
//
//   - A retried entry carries queue.Envelope.Retried. When it is placed in
//     a destination whose breaker opened before that time, the breaker is
//     closed and the pacer's run forgotten, so the entry connects. A
//     breaker that opened after the retry (the destination failed again)
//     defers it without connecting like any other entry.
//   - The operator's process also writes the retry to the queue's retry
//     bucket (queue.MarkRetried); every delivery process watches it
//     (watchRetries) and clears the marks of the retried domain's
//     destinations, or of all of them, so the next entries connect on
//     every node and not only where a retried entry happened to land.
//
// The parked entries of a retried domain are unparked by the retry itself
// (queue.Retry). Deferring without connecting never counts an attempt
// (finish.go), so a retry during a down window cannot make the domain
// count as failing.

// watchRetries clears the marks the operator retries in the retry bucket
// name, until ctx ends. Without the bucket the retried entries still
// connect (they carry queue.Envelope.Retried); only other entries wait for
// their destination's breaker.
func (e *Engine) watchRetries(ctx context.Context) {
	marks, err := e.q.WatchRetried(ctx)
	if err != nil {
		if ctx.Err() == nil {
			e.log.Warn().Err(err).Str("event", "retry_watch_failed").
				Msg("operator retries clear this process's down marks only through the entries they retry")
		}
		return
	}
	for m := range marks {
		e.clearRetried(ctx, m)
	}
}

// clearRetried clears the marks one operator retry names.
func (e *Engine) clearRetried(ctx context.Context, m queue.RetryMark) {
	if m.Domain == "" {
		e.sched.clearMarks("", m.At, "")
		return
	}
	for _, key := range e.destKeys(ctx, m.Domain) {
		e.sched.clearMarks(key, m.At, m.Domain)
	}
}

// destKeys are the destinations domain's entries go to (with and without
// REQUIRETLS, whose TLS plans may differ).
func (e *Engine) destKeys(ctx context.Context, domain string) []string {
	rt := e.rt.Load()
	var keys []string
	for _, reqTLS := range []bool{false, true} {
		tr, err := rt.transport(ctx, &queue.Envelope{Domain: domain, RequireTLS: reqTLS})
		if err != nil {
			continue
		}
		lctx, cancel := context.WithTimeout(ctx, keyLookupTimeout)
		key := rt.client.Destination(lctx, tr)
		cancel()
		if len(keys) == 0 || keys[0] != key {
			keys = append(keys, key)
		}
	}
	return keys
}

// clearMarks closes the breaker of destination key ("" every one) if it
// opened before at, and forgets the destination's failed attempts before
// at: an operator retried domain's entries at at.
func (s *scheduler) clearMarks(key string, at time.Time, domain string) {
	s.mu.Lock()
	var cleared, keys []string
	for k, d := range s.dests {
		if key != "" && d.target != key { // every pool's queue of the destination
			continue
		}
		if k != key {
			keys = append(keys, k)
		}
		if d.failures > 0 && d.openedAt.Before(at) {
			d.failures, d.openUntil = 0, time.Time{}
			s.kickLocked(d)
			cleared = append(cleared, k)
		}
	}
	s.mu.Unlock()
	s.fin.pace.forget(key, at)
	if key != "" {
		for _, k := range keys {
			s.fin.pace.forget(k, at)
		}
	}
	for _, k := range cleared {
		s.log.Info().Str("event", "destination_retried").Str("destination", k).Str("domain", domain).
			Time("retried", at).Msg("an operator retried the destination; its down mark is cleared")
	}
}
