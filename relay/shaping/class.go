package shaping

import (
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
	lastUsed time.Time
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

// sentLastMinute is what this node sent over about the last minute.
func (st *class) sentLastMinute() int64 {
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.samples) == 0 {
		return st.sent.Load()
	}
	return st.sent.Load() - st.samples[0]
}

// sample records the sent count at a report.
func (st *class) sample(keep int) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.samples = append(st.samples, st.sent.Load())
	if len(st.samples) > keep {
		st.samples = append(st.samples[:0], st.samples[len(st.samples)-keep:]...)
	}
}

// idle reports whether the class holds nothing and was unused since before.
func (st *class) idle(before time.Time) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, n := range st.open {
		if n > 0 {
			return false
		}
	}
	return len(st.slots) == 0 && st.action.Load() == nil && st.backoff.Load() == nil &&
		st.waiting.Load() == 0 && st.lastUsed.Before(before)
}

// forgetIdle drops classes idle for idleAfter (bounding the memory of
// default destinations); whoever still waits on one is woken.
func (s *Shaper) forgetIdle() {
	before := s.now().Add(-idleAfter)
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, st := range s.classes {
		if st.idle(before) {
			delete(s.classes, k)
			st.wake()
		}
	}
}
