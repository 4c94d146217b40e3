package shaping

import (
	"context"
	"sync"
	"time"
)

// Conn is one connection's share of its class: a connection slot (for a
// provider with a connections limit, a lease in the bucket) and its
// messages. A Conn is used by one goroutine at a time; Release may be
// called from any and more than once.
type Conn struct {
	s      *Shaper
	st     *class
	scope  string // limit group at Connect (reloads keep it)
	source string
	sent   int

	mu       sync.Mutex // slot, rev, owed, released; held across one bucket write
	slot     string     // the slot key held; "" when none
	rev      uint64
	owed     bool // a provider slot is owed: granted while the bucket failed
	released bool
}

// Connect takes a connection slot and a connection_rate token of class c
// for source ("" = no source). It never blocks on a limit: ok false says
// why and until when (a suspension, all slots taken, the connection
// rate). Bucket trouble fails open: the node limits as if it were alone
// (its own connections within the limit, its own pace), logs
// event=shaping_kv_unavailable at most once a minute and leaves the bucket
// alone for a few seconds; no call waits on the bucket longer than about
// a second. When ctx ends, ok is false with ReasonCanceled.
func (s *Shaper) Connect(ctx context.Context, c Class, source string) (*Conn, Wait, bool) {
	if ctx.Err() != nil {
		return nil, Wait{Until: s.now(), Reason: ReasonCanceled}, false
	}
	lim := s.set.Load().limits(c.Provider)
	sc := scope(lim, source)
	st := s.locked(c)
	defer st.mu.Unlock()
	now := s.now()
	st.lastUsed = now
	if a := st.action.Load(); a.suspends(now) {
		return nil, Wait{Until: a.Until, Reason: ReasonSuspended}, false
	}
	conn := &Conn{s: s, st: st, scope: sc, source: source}
	probe := false
	if lim.Connections > 0 {
		var w Wait
		var ok bool
		if w, probe, ok = s.room(st, lim.Connections, sc, now); !ok {
			return nil, w, false
		}
	}
	if r := lim.ConnectionRate; !r.Unlimited() {
		if w, ok := s.take(ctx, st.pacer("c", sc), r, ReasonConnectionRate); !ok {
			return nil, w, false
		}
	}
	if lim.Connections > 0 && c.Provider != "" {
		if w, ok := s.takeSlot(ctx, st, conn, lim.Connections, probe); !ok {
			return nil, w, false
		}
		s.heldMu.Lock()
		s.held[conn] = struct{}{}
		s.heldMu.Unlock()
	}
	st.open[sc]++
	return conn, Wait{}, true
}

// room checks the connection limit against this node's connections and,
// for providers, the cluster's slots as the watch saw them. probe is true
// when the view says full but was not checked against the bucket for
// connPoll (a missed expiry must not keep a slot taken). The caller holds
// st.mu.
func (s *Shaper) room(st *class, limit int, sc string, now time.Time) (Wait, bool, bool) {
	full := Wait{Until: now.Add(s.timings.connPoll), Reason: ReasonConnections}
	if st.open[sc] >= limit {
		return full, false, false
	}
	if st.Provider == "" || st.usedSlots(sc) < limit {
		return Wait{}, false, true
	}
	// A probe would ignore slots numbered past a lowered limit.
	if now.Sub(st.probed[sc]) < s.timings.connPoll || st.slotsPast(sc, limit) > 0 {
		return full, false, false
	}
	st.probed[sc] = now
	return Wait{}, true, true
}

// pacer returns the class's pacer of kind "m" (messages) or "c" (new
// connections) for scope sc; the caller holds st.mu.
func (st *class) pacer(kind, sc string) *pacer {
	k := kind + sc
	p := st.pacers[k]
	if p == nil {
		p = &pacer{}
		if st.Provider != "" {
			p.key = "t." + st.part + "." + sc + "." + kind
		}
		st.pacers[k] = p
	}
	return p
}

// Send takes one message token of the connection's class: the pace of the
// rate in effect (configured, lowered by a rule or the builtin backoff),
// cluster-wide for providers. ok false: Wait says until when; the caller
// keeps the entry waiting (not failed) and may keep the connection open
// briefly or QUIT. Reason ReasonPerConnection: the connection has sent
// its per_connection messages; the caller QUITs and connects again.
// ReasonSuspended: a rule suspended the class meanwhile. Without limits
// Send costs two atomic operations and touches no bucket.
func (c *Conn) Send(ctx context.Context) (Wait, bool) {
	st := c.st
	lim := c.s.set.Load().limits(st.Provider)
	if lim.PerConnection > 0 && c.sent >= lim.PerConnection {
		return Wait{Until: c.s.now(), Reason: ReasonPerConnection}, false
	}
	r := lim.Rate
	if a, b := st.action.Load(), st.backoff.Load(); a != nil || b != nil {
		now := c.s.now()
		if a.suspends(now) {
			return Wait{Until: a.Until, Reason: ReasonSuspended}, false
		}
		r = effective(r, a, b, now)
	}
	if !r.Unlimited() {
		st.mu.Lock()
		st.lastUsed = c.s.now()
		w, ok := c.s.take(ctx, st.pacer("m", c.scope), r, ReasonRate)
		st.mu.Unlock()
		if !ok {
			return w, false
		}
	}
	c.sent++
	st.sent.Add(1)
	return Wait{}, true
}

// Release gives the slot back: the bucket's lease is deleted (on this
// node's revision only) and the class's Changed fires.
func (c *Conn) Release() {
	s, st := c.s, c.st
	c.mu.Lock()
	if c.released {
		c.mu.Unlock()
		return
	}
	c.released = true
	slot, rev := c.slot, c.rev
	if slot != "" {
		s.dropSlot(slot, rev)
	}
	c.mu.Unlock()
	s.heldMu.Lock()
	delete(s.held, c)
	s.heldMu.Unlock()
	st.mu.Lock()
	defer st.mu.Unlock()
	st.open[c.scope]--
	if slot != "" {
		delete(st.slots, slot)
	}
	st.notify()
}
