package shaping

import (
	"context"
	"strconv"
	"time"

	"github.com/jetrelay/jetrelay/queue"
)

const (
	// paceBurst is the idle allowance in intervals: a class idle for a
	// while may send paceBurst tokens at once before the pace holds.
	paceBurst = 1
	// blockSpan is the time a node reserves tokens for at once (one
	// bucket write), and how late past its slot (and the idle
	// allowance) a reserved token may still be used.
	blockSpan = 500 * time.Millisecond
	// maxBlock bounds the tokens of one block.
	maxBlock = 64
)

// blockTokens is how many tokens one reservation takes: blockSpan's
// worth, at least one.
func blockTokens(r Rate) int {
	return max(1, min(maxBlock, int(blockSpan/r.Interval())))
}

// pacer spends one class scope's rate (messages or new connections) as a
// generic cell rate algorithm whose state — the theoretical arrival time
// (TAT) of the next unreserved token — lives in the bucket for providers
// (key t.P.S.m or t.P.S.c) and in the pacer for default classes.
//
// A reservation at time t takes k = blockTokens tokens with slots
// s0 = max(TAT, t − paceBurst·T) and s0 + i·T, and moves TAT to s0 + k·T
// by compare-and-set: one write per block, so at 3000/m one write per 25
// messages while at 60/m each send is its own reservation, about a second
// apart across the cluster. The node spends the block locally: a token is
// usable from its slot on and until blockSpan + paceBurst·T after it, so
// every token sent in a window [a, a+W] has its slot in
// [a − blockSpan − paceBurst·T, a+W], and slots are T apart cluster-wide:
// at most Count·W/Per + Burst() sends in any window. A node reserves
// only tokens whose first slot is within blockSpan of now; unused tokens
// are lost (the cluster sends less, never more). Slots are wall-clock
// times: nodes keep their clocks in step (NTP); a node whose clock is d
// ahead finds the pace's slots d earlier than the others do.
type pacer struct {
	key string // "" for per-node pacers
	// block in hand
	next time.Time
	left int
	// last known TAT and its revision (0: absent); for per-node pacers
	// the TAT itself.
	tat time.Time
	rev uint64
}

// take spends one token at rate r, reserving a block when needed. The
// caller holds the class's mu. A pacer without a key (default classes),
// or any while the bucket fails, reserves from the TAT it holds.
func (s *Shaper) take(ctx context.Context, p *pacer, r Rate, reason string) (Wait, bool) {
	now := s.now()
	T := r.Interval()
	late := blockSpan + paceBurst*T
	for p.left > 0 && now.Sub(p.next) > late {
		p.next, p.left = p.next.Add(T), p.left-1
	}
	if p.left == 0 {
		if w, ok := s.reserve(ctx, p, r, now); !ok {
			if w.Reason == "" {
				w.Reason = reason
			}
			return w, false
		}
	}
	if p.next.After(now) {
		return Wait{Until: p.next, Reason: reason}, false
	}
	p.next, p.left = p.next.Add(T), p.left-1
	return Wait{}, true
}

// reserve takes a block into p, or says when the next slot is near
// enough to try again.
func (s *Shaper) reserve(ctx context.Context, p *pacer, r Rate, now time.Time) (Wait, bool) {
	T := r.Interval()
	k := blockTokens(r)
	if p.key == "" || s.health.down() {
		return reserveFrom(p, p.tat, now, T, k)
	}
	kctx, cancel := context.WithTimeout(ctx, kvTimeout)
	defer cancel()
	tat, rev, known := p.tat, p.rev, p.rev != 0
	for range casAttempts {
		if !known {
			v, r, err := get(kctx, s.kv, p.key)
			if err != nil {
				return s.reserveFailed(ctx, p, now, T, k, err)
			}
			tat, rev = parseTAT(v), r
		}
		s0 := start(tat, now, T)
		if s0.Sub(now) > blockSpan {
			p.tat, p.rev = tat, rev
			return Wait{Until: s0.Add(-blockSpan)}, false
		}
		end := s0.Add(time.Duration(k) * T)
		ttl := end.Sub(now) + paceBurst*T + time.Second
		newRev, err := store(kctx, s.js, s.kv, p.key, []byte(strconv.FormatInt(end.UnixNano(), 10)), rev, ttl)
		if queue.IsConflict(err) {
			known = false
			continue
		}
		if err != nil {
			return s.reserveFailed(ctx, p, now, T, k, err)
		}
		p.tat, p.rev, p.next, p.left = end, newRev, s0, k
		return Wait{}, true
	}
	// Lost every race: others are sending; look again after one interval.
	p.rev = 0
	return Wait{Until: now.Add(T)}, false
}

// reserveFailed fails open: the node paces alone from what it knew. A
// caller's ctx that ended is no bucket failure.
func (s *Shaper) reserveFailed(ctx context.Context, p *pacer, now time.Time, T time.Duration, k int, err error) (Wait, bool) {
	if ctx.Err() != nil {
		return Wait{Until: now, Reason: ReasonCanceled}, false
	}
	s.health.fail(err)
	p.rev = 0
	return reserveFrom(p, p.tat, now, T, k)
}

// reserveFrom reserves a block against a TAT held in the pacer.
func reserveFrom(p *pacer, tat, now time.Time, T time.Duration, k int) (Wait, bool) {
	s0 := start(tat, now, T)
	if s0.Sub(now) > blockSpan {
		return Wait{Until: s0.Add(-blockSpan)}, false
	}
	p.next, p.left = s0, k
	p.tat = s0.Add(time.Duration(k) * T)
	return Wait{}, true
}

// start is the first slot a reservation at now gets.
func start(tat, now time.Time, T time.Duration) time.Time {
	idle := now.Add(-paceBurst * T)
	if tat.After(idle) {
		return tat
	}
	return idle
}

func parseTAT(v []byte) time.Time {
	n, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil || n <= 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}
