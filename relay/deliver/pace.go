package deliver

import (
	"math/rand/v2"
	"sync"
	"time"

	"github.com/jetrelay/jetrelay/relay/config"
)

// Retry pacing for failing destinations.
//
// A destination that has failed paceAfter attempts in a row without
// delivering anything (every recipient deferred, or no server reached) is
// failing. Its entries' next attempts are then placed into time slots that
// hold at most delivery.retry.pace retries per second for all failing
// destinations together, at or after the time the retry schedule asks for.
// Without this, a domain that defers 100,000 messages gets all of them
// back on their schedule in waves as fast as they came in, and each retry
// costs about four synchronous writes (the schedule fires, the lease, the
// new schedule, the ack) on the stream fresh mail needs: measured with
// `scripts/bench --deferred 100000`, fresh mail fell to 26 % of its rate.
// A destination is healthy again at its first delivery; entries already
// placed keep their slots (`jetrelay queue retry` brings them forward).
// The pace is per jetrelay process: N processes retry up to N times pace.
const (
	// paceAfter: consecutive failed attempts before a destination's
	// retries are paced.
	paceAfter = 10
	// paceForget: a destination not heard of for this long starts over.
	paceForget = time.Hour
)

type pacer struct {
	mu    sync.Mutex
	width time.Duration // slot width: 1 s, or 1/rate when slower than 1/s
	room  int           // retries per slot; 0 = pacing off
	rate  config.Rate
	used  map[int64]int // slot -> retries placed in it
	skip  map[int64]int64
	dests map[string]*paceState
}

type paceState struct {
	streak int // attempts in a row without a delivery
	seen   time.Time
}

func newPacer(r config.Rate) *pacer {
	p := &pacer{used: map[int64]int{}, skip: map[int64]int64{}, dests: map[string]*paceState{}}
	p.setRate(r)
	return p
}

// setRate changes the pace (reload). Slots already taken are forgotten
// (the entries keep their times).
func (p *pacer) setRate(r config.Rate) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if r == p.rate && p.used != nil {
		return
	}
	p.rate = r
	clear(p.used)
	clear(p.skip)
	p.room, p.width = 0, time.Second
	if r.Unlimited() || r.Per <= 0 {
		return
	}
	perSec := float64(r.Count) / r.Per.Seconds()
	if perSec >= 1 {
		p.room = int(perSec + 0.5)
		return
	}
	p.room, p.width = 1, time.Duration(float64(time.Second)/perSec)
}

// paceChange is a destination entering or leaving the failing state.
type paceChange int

const (
	paceSame paceChange = iota
	paceFailing
	paceRecovered
)

// observe records an attempt's outcome for destination key and reports
// whether the destination is failing (its retries are to be paced) and
// whether that just changed.
func (p *pacer) observe(key string, delivered bool, now time.Time) (bool, paceChange) {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.dests[key]
	if delivered {
		if st == nil {
			return false, paceSame
		}
		delete(p.dests, key)
		if st.streak >= paceAfter {
			return false, paceRecovered
		}
		return false, paceSame
	}
	if st == nil {
		st = &paceState{}
		p.dests[key] = st
	}
	st.streak++
	st.seen = now
	change := paceSame
	if st.streak == paceAfter {
		change = paceFailing
	}
	return p.room > 0 && st.streak >= paceAfter, change
}

// failing reports whether destination key's retries are paced, without
// counting anything (an entry deferred without an attempt asks this).
func (p *pacer) failing(key string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.dests[key]
	return p.room > 0 && st != nil && st.streak >= paceAfter
}

// forget drops destination key's run of failed attempts when its last
// failure was before before (an operator retried it; retry.go); key ""
// drops every destination's.
func (p *pacer) forget(key string, before time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if st := p.dests[key]; key != "" {
		if st != nil && st.seen.Before(before) {
			delete(p.dests, key)
		}
		return
	}
	for k, st := range p.dests {
		if st.seen.Before(before) {
			delete(p.dests, k)
		}
	}
}

// place returns the first time at or after at that has room in its slot,
// and takes that room.
func (p *pacer) place(at time.Time) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.room == 0 {
		return at
	}
	want := at.UnixNano() / int64(p.width)
	s := p.find(want)
	if p.used[s]++; p.used[s] >= p.room {
		p.skip[s] = s + 1
	}
	if s == want {
		return at
	}
	start := time.Unix(0, s*int64(p.width))
	return start.Add(time.Duration(rand.Int64N(int64(p.width))))
}

// find follows full slots to the first one with room, shortening the
// chain as it goes (union-find style path compression).
func (p *pacer) find(s int64) int64 {
	root := s
	for {
		n, ok := p.skip[root]
		if !ok {
			break
		}
		root = n
	}
	for s != root {
		n := p.skip[s]
		p.skip[s] = root
		s = n
	}
	return root
}

// sweep forgets past slots and destinations not heard of for paceForget.
func (p *pacer) sweep(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	cur := now.UnixNano() / int64(p.width)
	for s := range p.used {
		if s < cur {
			delete(p.used, s)
		}
	}
	for s := range p.skip {
		// Chains only lead forward and every search starts at a future
		// slot, so past links are never followed again.
		if s < cur {
			delete(p.skip, s)
		}
	}
	for k, st := range p.dests {
		if now.Sub(st.seen) > paceForget {
			delete(p.dests, k)
		}
	}
}
