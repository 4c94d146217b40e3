package deliver

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/outcome"
)

// An entry deferred without connecting keeps its attempt count and its
// last real reply, and waits the interval it last waited again (not the
// next one), no earlier than its destination's breaker half-opens; one an
// operator retried that only found no room comes back within a minute.
func TestUntriedDeferralIsNoAttempt(t *testing.T) {
	set := Settings{Delivery: config.Default().Delivery}
	set.Retry.MaxAge = config.Duration(48 * time.Hour)
	rt := &atomic.Pointer[runtime]{}
	rt.Store(&runtime{set: set, schedule: []time.Duration{time.Minute, 10 * time.Minute, time.Hour}})
	f := &finisher{rt: rt, pace: newPacer(config.Rate{})}
	now := time.Now()
	last := queue.Reply{Code: 421, Enh: "4.7.0", Text: "too busy", MX: "mx.example"}
	env := &queue.Envelope{ID: "X", Domain: "example", Arrival: now, Attempt: 2, LastReply: last,
		Rcpts: []queue.Recipient{{Addr: "a@example"}}}
	fj := &finishJob{j: &job{en: &queue.Entry{Env: env}}, end: now, untried: true}

	in := func(what string, got time.Time, lo, hi time.Duration) {
		t.Helper()
		if d := got.Sub(now); d < lo || d > hi {
			t.Fatalf("%s: next attempt in %v, want %v to %v", what, d, lo, hi)
		}
	}
	in("attempt 2, untried", f.untriedNext(env, fj, false), 9*time.Minute, 11*time.Minute)
	fj.notBefore = now.Add(30 * time.Minute)
	in("breaker open for 30m", f.untriedNext(env, fj, false), 30*time.Minute, 33*time.Minute)
	fj.notBefore = time.Time{}
	env.Retried = now
	in("retried, no room", f.untriedNext(env, fj, false), 30*time.Second, time.Minute)
	env.Retried = time.Time{}
	fresh := *env
	fresh.Attempt, fresh.LastReply = 0, queue.Reply{}
	in("never tried", f.untriedNext(&fresh, fj, false), 54*time.Second, 66*time.Second)

	r := []outcome.Result{{Rcpt: env.Rcpts[0], Reply: replyBusy}}
	if got := untriedEnv(env, r); got.Attempt != 2 || got.LastReply != last {
		t.Fatalf("untried: %d attempts, last reply %+v; want 2 and the real one", got.Attempt, got.LastReply)
	}
	if got := untriedEnv(&fresh, r); got.Attempt != 0 || got.LastReply.Enh != replyBusy.Enh {
		t.Fatalf("untried, never tried: %d attempts, last reply %+v", got.Attempt, got.LastReply)
	}
	if got := remainingEnv(env, r); got.Attempt != 3 {
		t.Fatalf("a real attempt counted %d, want 3", got.Attempt)
	}
	if attemptNo(fj) != 2 {
		t.Fatalf("untried event says attempt %d, want 2", attemptNo(fj))
	}
}
