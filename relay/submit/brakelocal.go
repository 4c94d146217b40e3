package submit

import (
	"sync"
	"time"

	"github.com/jetrelay/jetrelay/relay/config"
)

const (
	// brakeRetryAfter is how long the brake leaves the bucket alone after
	// it failed to answer, counting on the node instead.
	brakeRetryAfter = 5 * time.Second
	// brakeLogEvery bounds auth_brake_unavailable log lines.
	brakeLogEvery = time.Minute
	// localBrakeMax bounds the node's fallback counts.
	localBrakeMax = 4096
)

// brakeHealth remembers a bucket failure so that AUTH does not wait for a
// bucket that just failed: for brakeRetryAfter the node's local counts
// (localBrake) stand in. Wall clock, not the brake's injectable one.
type brakeHealth struct {
	mu        sync.Mutex
	downUntil time.Time
	loggedAt  time.Time
}

// usable reports whether the bucket is worth asking.
func (h *brakeHealth) usable() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return !time.Now().Before(h.downUntil)
}

// failed marks the bucket unavailable and reports whether to log it (at
// most once per brakeLogEvery).
func (h *brakeHealth) failed() bool {
	now := time.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.downUntil = now.Add(brakeRetryAfter)
	if !h.loggedAt.IsZero() && now.Sub(h.loggedAt) < brakeLogEvery {
		return false
	}
	h.loggedAt = now
	return true
}

// localBrake counts AUTH failures per client on this node while the
// bucket does not answer, and bans a client at auth_failures.max failures
// within the window, on this node, until the ban ends. It fails open for
// (user, client) pairs and the per-user delay; the bucket has those.
type localBrake struct {
	mu sync.Mutex
	m  map[string]brakeRecord // client -> count
}

// banned reports a local ban of client in force at now.
func (l *localBrake) banned(client string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	r, ok := l.m[client]
	return ok && r.bannedAt(now)
}

// fail counts one failure of client.
func (l *localBrake) fail(client string, cfg config.AuthFailures, now time.Time) failOutcome {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[string]brakeRecord{}
	}
	r, ok := l.m[client]
	if !ok || !r.bannedAt(now) && now.Sub(r.First) > cfg.Window.D() {
		l.prune(now, cfg)
		r = brakeRecord{Client: client, First: now}
	}
	r.Failures++
	out := failOutcome{clientFail: r.Failures, delay: min(time.Duration(r.Failures)*cfg.Delay.D(), maxAuthDelay)}
	if cfg.Max > 0 && r.Failures >= cfg.Max && !r.bannedAt(now) {
		r.Until, out.clientBan = now.Add(cfg.Ban.D()), true
	}
	l.m[client] = r
	return out
}

// prune makes room for one more client: records past their window and
// ban go first; when the map is still full, counts that did not ban.
func (l *localBrake) prune(now time.Time, cfg config.AuthFailures) {
	if len(l.m) < localBrakeMax {
		return
	}
	for k, r := range l.m {
		if !r.bannedAt(now) && now.Sub(r.First) > cfg.Window.D() {
			delete(l.m, k)
		}
	}
	if len(l.m) < localBrakeMax {
		return
	}
	for k, r := range l.m {
		if !r.bannedAt(now) {
			delete(l.m, k)
		}
	}
	if len(l.m) >= localBrakeMax { // every one banned: the bound wins
		clear(l.m)
	}
}
