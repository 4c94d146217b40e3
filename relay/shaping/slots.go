package shaping

import (
	"context"
	"math/rand/v2"
	"strconv"
	"sync/atomic"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/nats-io/nats.go/jetstream"
)

// leaseSeq numbers this process's slot leases (the value of a slot key
// is "node/seq", for operators reading the bucket).
var leaseSeq atomic.Uint64

// slotKey is the bucket key of slot n of a class scope.
func slotKey(part, sc string, n int) string {
	return "c." + part + "." + sc + "." + strconv.Itoa(n)
}

// takeSlot creates a free slot key of the class scope with a TTL, starting
// at a random slot so nodes rarely race for the same one. Slots the watch
// saw taken are skipped unless probe. A failing bucket grants the slot
// owed (room checked this node's own count); the renew loop takes one
// when the bucket answers again. The caller holds st.mu.
func (s *Shaper) takeSlot(ctx context.Context, st *class, c *Conn, limit int, probe bool) (Wait, bool) {
	now := s.now()
	if s.health.down() {
		c.owed = true
		return Wait{}, true
	}
	kctx, cancel := context.WithTimeout(ctx, kvTimeout)
	defer cancel()
	val := []byte(s.node + "/" + strconv.FormatUint(leaseSeq.Add(1), 10))
	n0 := rand.IntN(limit)
	for i := range limit {
		key := slotKey(st.part, c.scope, (n0+i)%limit)
		if _, taken := st.slots[key]; taken && !probe {
			continue
		}
		rev, err := s.kv.Create(kctx, key, val, jetstream.KeyTTL(ttlOf(s.timings.slotTTL)))
		if queue.IsConflict(err) {
			st.slots[key] = c.scope
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return Wait{Until: now, Reason: ReasonCanceled}, false
			}
			s.health.fail(err)
			c.owed = true
			return Wait{}, true
		}
		delete(st.probed, c.scope)
		st.slots[key] = c.scope
		c.slot, c.rev = key, rev
		return Wait{}, true
	}
	st.probed[c.scope] = now
	return Wait{Until: now.Add(s.timings.connPoll), Reason: ReasonConnections}, false
}

// dropSlot deletes a held slot key if it is still at this node's revision
// (a lease lost meanwhile belongs to someone else now).
func (s *Shaper) dropSlot(key string, rev uint64) {
	if s.health.down() {
		return // its TTL gives it back
	}
	ctx, cancel := context.WithTimeout(context.Background(), kvTimeout)
	defer cancel()
	err := s.kv.Purge(ctx, key, jetstream.LastRevision(rev), jetstream.PurgeTTL(markerTTL))
	if err != nil && !queue.IsConflict(err) {
		s.health.fail(err)
	}
}

// renew extends every held slot's lease, and takes a slot for the
// connections granted while the bucket failed.
func (s *Shaper) renew(ctx context.Context) {
	s.heldMu.Lock()
	conns := make([]*Conn, 0, len(s.held))
	for c := range s.held {
		conns = append(conns, c)
	}
	s.heldMu.Unlock()
	for _, c := range conns {
		if ctx.Err() != nil || s.health.down() {
			return
		}
		s.renewOne(ctx, c)
	}
}

// renewOne renews c's lease or takes the slot it is owed.
func (s *Shaper) renewOne(ctx context.Context, c *Conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.released {
		return
	}
	if c.owed || c.slot == "" {
		s.repay(ctx, c)
		return
	}
	kctx, cancel := context.WithTimeout(ctx, kvTimeout)
	defer cancel()
	val := []byte(s.node + "/" + strconv.FormatUint(leaseSeq.Add(1), 10))
	rev, err := store(kctx, s.js, s.kv, c.slot, val, c.rev, s.timings.slotTTL)
	switch {
	case queue.IsConflict(err):
		s.log.Warn().Str("event", "shaping_slot_lost").Str("provider", c.st.Provider).Str("slot", c.slot).
			Msg("connection slot lease lost (the bucket was unreachable longer than its TTL); taking another")
		c.slot, c.rev, c.owed = "", 0, true
	case err != nil:
		s.health.fail(err)
	default:
		c.rev = rev
	}
}

// repay takes a slot for a connection that holds none; the caller holds
// c.mu. When every slot is taken the connection stays owed (over the limit
// until it ends, which per_connection bounds).
func (s *Shaper) repay(ctx context.Context, c *Conn) {
	st := c.st
	lim := s.set.Load().limits(st.Provider)
	if lim.Connections <= 0 {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	c.owed = false
	if _, ok := s.takeSlot(ctx, st, c, lim.Connections, true); !ok {
		c.owed = true
	}
}
