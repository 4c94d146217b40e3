package shaping

import (
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// class is a node's state of one Class.
type class struct {
	Class
	part string // kp(Key)

	// sent counts messages sent through this node (atomic: the one cost
	// of an unlimited Send); samples keep it per report for the rate of
	// the last minute.
	sent    atomic.Int64
	waiting atomic.Int64
	// action and backoff are the bucket's s.P and b.P, from the watch.
	action  atomicOverride
	backoff atomicOverride

	mu       sync.Mutex
	changed  chan struct{}
	open     map[string]int       // this node's connections per scope
	slots    map[string]string    // the cluster's live slot keys → scope (from the watch)
	probed   map[string]time.Time // scope → last slot attempt although the view said full
	pacers   map[string]*pacer    // "m"/"c" + scope
	samples  []int64              // sent at each of the last reports, oldest first
	keep     int                  // samples spanning a minute
	lastUsed time.Time
	gone     bool // forgotten: a new state replaces it
}

type atomicOverride = atomic.Pointer[override]

// samplesKept covers a minute of reports (plus one for the start).
func samplesKept(every time.Duration) int { return int(time.Minute/every) + 1 }

// class returns the state of c, creating it.
func (s *Shaper) class(c Class) *class {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.classes[c.Key]
	if st == nil {
		st = &class{Class: c, part: kp(c.Key), changed: make(chan struct{}),
			open: map[string]int{}, slots: map[string]string{}, probed: map[string]time.Time{},
			pacers: map[string]*pacer{}}
		s.classes[c.Key] = st
	}
	return st
}

// classOfPart returns the state of the class whose key part is part.
func (s *Shaper) classOfPart(part string) *class {
	key, ok := unkp(part)
	if !ok {
		return nil
	}
	c := Class{Key: key}
	if !strings.HasPrefix(key, "dest:") {
		c.Provider = key
	}
	return s.class(c)
}

// notify wakes everyone waiting on Changed; the caller holds st.mu.
func (st *class) notify() {
	close(st.changed)
	st.changed = make(chan struct{})
}

// notifyLocked takes st.mu to notify.
func (st *class) wake() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.notify()
}

// scope is the limit group of source within the class: "_" in total, or
// the source when limits apply per source.
func scope(l Limits, source string) string {
	if l.PerSource && source != "" {
		return kp(source)
	}
	return "_"
}

// usedSlots counts the cluster's live slots of scope; the caller holds st.mu.
func (st *class) usedSlots(sc string) int {
	n := 0
	for _, v := range st.slots {
		if v == sc {
			n++
		}
	}
	return n
}

// slotsPast counts the live slots of scope numbered limit or more (taken
// before a reload lowered the limit); the caller holds st.mu.
func (st *class) slotsPast(sc string, limit int) int {
	n := 0
	for key, v := range st.slots {
		if v != sc {
			continue
		}
		if i, err := strconv.Atoi(key[strings.LastIndexByte(key, '.')+1:]); err != nil || i >= limit {
			n++
		}
	}
	return n
}

// sentLastMinute is what this node sent over about the last minute: since
// the oldest sample once a minute of them is kept, else since the class
// began.
func (st *class) sentLastMinute() int64 {
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.samples) == 0 || len(st.samples) < st.keep {
		return st.sent.Load()
	}
	return st.sent.Load() - st.samples[0]
}

// sample records the sent count at a report, keeping keep samples.
func (st *class) sample(keep int) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.keep = keep
	st.samples = append(st.samples, st.sent.Load())
	if len(st.samples) > keep {
		st.samples = append(st.samples[:0], st.samples[len(st.samples)-keep:]...)
	}
}

// retire marks the class gone when it holds nothing and was unused since
// before; whoever waits on it is woken (and finds a new one).
func (st *class) retire(before time.Time) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, n := range st.open {
		if n > 0 {
			return false
		}
	}
	if len(st.slots) > 0 || st.action.Load() != nil || st.backoff.Load() != nil ||
		st.waiting.Load() != 0 || !st.lastUsed.Before(before) {
		return false
	}
	st.gone = true
	st.notify()
	return true
}

// forgetIdle drops classes idle for idleAfter (bounding the memory of
// default destinations).
func (s *Shaper) forgetIdle() {
	before := s.now().Add(-idleAfter)
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, st := range s.classes {
		if st.retire(before) {
			delete(s.classes, k)
		}
	}
}

// locked returns the live state of c with its mu held.
func (s *Shaper) locked(c Class) *class {
	for {
		st := s.class(c)
		st.mu.Lock()
		if !st.gone {
			return st
		}
		st.mu.Unlock()
	}
}
