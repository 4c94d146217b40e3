package deliver

import (
	"testing"
	"time"
)

// arrivals bounds an entry's time in the iterator's buffer by the time of
// the return prefetch returns earlier (the iterator's start before that).
func TestArrivalsBoundBufferedTime(t *testing.T) {
	start := time.Unix(1000, 0)
	a := newArrivals(3, start)
	at := func(s int) time.Time { return start.Add(time.Duration(s) * time.Second) }
	want := []time.Time{start, start, start, at(1), at(2), at(3), at(10)}
	for i, now := range []time.Time{at(1), at(2), at(3), at(10), at(11), at(12), at(13)} {
		if got := a.next(now); !got.Equal(want[i]) {
			t.Errorf("return %d at %v: bound %v, want %v", i, now.Sub(start), got.Sub(start), want[i].Sub(start))
		}
	}
}

// The renewal period follows the consumer's AckWait, and the heartbeat
// loop ticks at least four times per period.
func TestLeasesPeriodFollowsAckWait(t *testing.T) {
	l := newLeases()
	l.setAckWait(20 * time.Second)
	if l.every != 5*time.Second || l.tick() != time.Second {
		t.Errorf("AckWait 20s: renewal every %v, tick %v; want 5s, 1s", l.every, l.tick())
	}
	l.setAckWait(time.Second)
	if l.every != 250*time.Millisecond || l.tick() != 62500*time.Microsecond {
		t.Errorf("AckWait 1s: renewal every %v, tick %v; want 250ms, 62.5ms", l.every, l.tick())
	}
}

// Prefetch is twice the workers, within its bounds.
func TestPrefetchFollowsWorkers(t *testing.T) {
	for _, c := range []struct{ conns, want int }{{1, minPrefetch}, {200, 400}, {5000, maxPrefetch}} {
		var s Settings
		s.MaxConnections = c.conns
		if got := prefetch(s); got != c.want {
			t.Errorf("max_connections %d: prefetch %d, want %d", c.conns, got, c.want)
		}
	}
}
