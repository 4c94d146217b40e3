package deliver

import (
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/relay/config"
)

func TestPacerPlacesIntoSlotsWithRoom(t *testing.T) {
	p := newPacer(config.Rate{Count: 10, Per: time.Second})
	at := time.Unix(1_800_000_000, 400_000_000)
	perSlot := map[int64]int{}
	var last time.Time
	for i := 0; i < 100; i++ {
		got := p.place(at)
		if got.Before(at) {
			t.Fatalf("placed at %v, before the scheduled %v", got, at)
		}
		perSlot[got.Unix()]++
		if got.After(last) {
			last = got
		}
	}
	for s, n := range perSlot {
		if n > 10 {
			t.Fatalf("slot %d holds %d retries, pace is 10/s", s, n)
		}
	}
	if len(perSlot) != 10 || last.Sub(at) > 10*time.Second {
		t.Fatalf("100 retries at 10/s took %d slots, last at +%v; want 10 slots within 10s", len(perSlot), last.Sub(at))
	}
	// A later time with room is used as it is; the full slots are skipped.
	if later := at.Add(time.Minute); !p.place(later).Equal(later) {
		t.Fatal("a slot with room did not take the scheduled time")
	}
	if got := p.place(at); got.Unix() != at.Unix()+10 {
		t.Fatalf("next retry at the full time went to %v, want the first free slot %d", got, at.Unix()+10)
	}
}

func TestPacerSlowRateWidensSlots(t *testing.T) {
	p := newPacer(config.Rate{Count: 30, Per: time.Minute}) // one per 2 s
	at := time.Unix(1_800_000_000, 0)
	slot := func(x time.Time) int64 { return x.UnixNano() / int64(2*time.Second) }
	for i := int64(0); i < 5; i++ {
		got := p.place(at)
		if got.Before(at) || slot(got) != slot(at)+i {
			t.Fatalf("retry %d at 30/m placed at %v (slot +%d), want slot +%d", i, got, slot(got)-slot(at), i)
		}
	}
}

func TestPacerObserve(t *testing.T) {
	p := newPacer(config.Rate{Count: 5, Per: time.Second})
	now := time.Now()
	for i := 1; i < paceAfter; i++ {
		if paced, ch := p.observe("mx:dead.test", false, now); paced || ch != paceSame {
			t.Fatalf("paced (%v, change %d) after %d failures, want %d", paced, ch, i, paceAfter)
		}
	}
	if paced, ch := p.observe("mx:dead.test", false, now); !paced || ch != paceFailing {
		t.Fatalf("after %d failures: paced %v, change %d; want paced, failing", paceAfter, paced, ch)
	}
	if paced, ch := p.observe("mx:dead.test", false, now); !paced || ch != paceSame {
		t.Fatalf("the next failure: paced %v, change %d; want paced, no change", paced, ch)
	}
	if paced, _ := p.observe("mx:other.test", false, now); paced {
		t.Fatal("another destination inherited the streak")
	}
	if paced, ch := p.observe("mx:dead.test", true, now); paced || ch != paceRecovered {
		t.Fatalf("a delivery: paced %v, change %d; want recovered", paced, ch)
	}
	if paced, ch := p.observe("mx:dead.test", false, now); paced || ch != paceSame {
		t.Fatal("a delivery did not end the streak")
	}
	if _, ch := p.observe("mx:fine.test", true, now); ch != paceSame {
		t.Fatal("a healthy destination reported as recovered")
	}
	off := newPacer(config.Rate{})
	for i := 0; i < 2*paceAfter; i++ {
		if paced, _ := off.observe("mx:dead.test", false, now); paced {
			t.Fatal(`pace "" paced`)
		}
	}
	if at := now.Add(time.Minute); !off.place(at).Equal(at) {
		t.Fatal(`pace "" moved a retry`)
	}
}

func TestPacerSweep(t *testing.T) {
	p := newPacer(config.Rate{Count: 1, Per: time.Second})
	now := time.Unix(1_800_000_000, 0)
	for i := 0; i < 5; i++ {
		p.place(now)
	}
	p.observe("mx:dead.test", false, now)
	p.sweep(now.Add(3 * time.Second))
	if len(p.used) != 2 || len(p.skip) > 2 {
		t.Fatalf("after sweep: %d used slots, %d links; want the 2 future ones", len(p.used), len(p.skip))
	}
	if got := p.place(now.Add(3 * time.Second)); got.Unix() != now.Unix()+5 {
		t.Fatalf("after sweep placed at +%ds, want +5s", got.Unix()-now.Unix())
	}
	p.sweep(now.Add(paceForget + time.Minute))
	if len(p.dests) != 0 {
		t.Fatal("an old destination was not forgotten")
	}
}

// Retry jitter stays within ±10% and the last interval repeats.
func TestRetryDelay(t *testing.T) {
	s := []time.Duration{time.Minute, 5 * time.Minute}
	for _, tc := range []struct {
		attempt int
		u       float64
		want    time.Duration
	}{
		{0, 0.5, time.Minute}, {0, 0, 54 * time.Second}, {0, 0.999999, 66 * time.Second},
		{1, 0.5, 5 * time.Minute}, {9, 0.5, 5 * time.Minute},
	} {
		got := retryDelay(s, tc.attempt, tc.u)
		if d := got - tc.want; d < -time.Millisecond || d > time.Millisecond {
			t.Errorf("retryDelay(attempt %d, u %v) = %s, want %s", tc.attempt, tc.u, got, tc.want)
		}
	}
}

// An operator retry forgets a destination's run of failures from before
// it, not those after; failing only reads the state.
func TestPacerForgetsFailuresBeforeARetry(t *testing.T) {
	p := newPacer(config.Rate{Count: 10, Per: time.Second})
	t0 := time.Unix(1_800_000_000, 0)
	for i := range paceAfter {
		p.observe("a", false, t0.Add(time.Duration(i)*time.Millisecond))
		p.observe("b", false, t0.Add(time.Duration(i)*time.Millisecond))
	}
	if !p.failing("a") || !p.failing("a") || p.failing("c") {
		t.Fatal("failing: a should stay failing when asked twice, c is unknown")
	}
	p.forget("a", t0) // the failures came after this retry
	if !p.failing("a") {
		t.Fatal("a retry older than the failures cleared them")
	}
	p.forget("a", t0.Add(time.Second))
	if p.failing("a") || !p.failing("b") {
		t.Fatal("a retry of a must clear a, and only a")
	}
	p.forget("", t0.Add(time.Second))
	if p.failing("b") {
		t.Fatal("a retry of everything left b failing")
	}
}
