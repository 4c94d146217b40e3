package submit

import (
	"net/netip"
	"sync"
	"time"

	"github.com/jetrelay/jetrelay/relay/config"
)

const (
	// maxTrackedClients bounds the failure map; when full, expired entries
	// go first, then the least recently active one.
	maxTrackedClients = 10000
	// maxAuthDelay caps the growing per-failure delay.
	maxAuthDelay = 5 * time.Second
)

// clientKey groups addresses the way one client holds them: an IPv4
// address, or the /64 of an IPv6 address (one customer's prefix).
func clientKey(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	a = a.Unmap()
	if a.Is4() {
		return a.String()
	}
	p, _ := a.Prefix(64)
	return p.String()
}

// authFailures counts bad credentials per client within a window and bans
// a client that reaches the maximum (submission.auth_failures).
type authFailures struct {
	mu sync.Mutex
	m  map[string]*failEntry
}

type failEntry struct {
	count       int
	first, last time.Time
	bannedUntil time.Time
}

func newAuthFailures() *authFailures { return &authFailures{m: map[string]*failEntry{}} }

// banned returns when the client's ban ends, if it is banned now.
func (a *authFailures) banned(key string, now time.Time) (time.Time, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	e := a.m[key]
	if e == nil || !now.Before(e.bannedUntil) {
		return time.Time{}, false
	}
	return e.bannedUntil, true
}

// fail records a failure and returns the delay to impose before answering
// (Delay per failure in the window, capped) and whether this failure
// started a ban.
func (a *authFailures) fail(key string, cfg config.AuthFailures, now time.Time) (time.Duration, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	e := a.m[key]
	if e == nil || now.Sub(e.first) > cfg.Window.D() && !now.Before(e.bannedUntil) {
		if e == nil {
			a.makeRoom(now, cfg)
		}
		e = &failEntry{first: now}
		a.m[key] = e
	}
	e.count++
	e.last = now
	delay := min(time.Duration(e.count)*cfg.Delay.D(), maxAuthDelay)
	if cfg.Max > 0 && e.count >= cfg.Max && !now.Before(e.bannedUntil) {
		e.bannedUntil = now.Add(cfg.Ban.D())
		return delay, true
	}
	return delay, false
}

// success forgets a client's failures (a ban stays until it ends).
func (a *authFailures) success(key string, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if e := a.m[key]; e != nil && !now.Before(e.bannedUntil) {
		delete(a.m, key)
	}
}

// makeRoom keeps the map below maxTrackedClients. Called with mu held.
func (a *authFailures) makeRoom(now time.Time, cfg config.AuthFailures) {
	if len(a.m) < maxTrackedClients {
		return
	}
	var oldestKey string
	var oldest time.Time
	for k, e := range a.m {
		if now.Sub(e.first) > cfg.Window.D() && !now.Before(e.bannedUntil) {
			delete(a.m, k)
			continue
		}
		if oldestKey == "" || e.last.Before(oldest) {
			oldestKey, oldest = k, e.last
		}
	}
	if len(a.m) >= maxTrackedClients {
		delete(a.m, oldestKey)
	}
}
