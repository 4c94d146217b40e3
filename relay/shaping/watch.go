package shaping

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// watched are the keys a node keeps a copy of: slots, rule actions,
// backoffs and node reports (paces and rule counts are read when used).
// WatchFiltered rewrites the slice it is given: pass a clone.
var watched = []string{"c.>", "s.>", "b.>", "n.>"}

// watch keeps the local copy of the bucket current, watching again after
// a failure.
func (s *Shaper) watch(ctx context.Context) {
	for ctx.Err() == nil {
		w, err := s.kv.WatchFiltered(ctx, slices.Clone(watched))
		if err != nil {
			if ctx.Err() == nil {
				s.health.fail(err)
			}
			pause(ctx, downFor)
			continue
		}
		s.follow(ctx, w)
		_ = w.Stop() // the watch ended; a new one starts below
		pause(ctx, time.Second)
	}
}

// pause waits d or until ctx ends (the loop's pace, not synchronisation).
func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// follow applies the watch's entries; after the initial values it drops
// what the copy held but the bucket no longer has.
func (s *Shaper) follow(ctx context.Context, w jetstream.KeyWatcher) {
	seen := map[string]bool{}
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e == nil {
				s.sweep(seen)
				seen = nil
				continue
			}
			if seen != nil {
				seen[e.Key()] = true
			}
			s.applyEntry(e.Key(), e.Value(), e.Revision(), e.Operation() == jetstream.KeyValuePut)
		}
	}
}

// applyEntry updates the copy from one entry of the bucket.
func (s *Shaper) applyEntry(key string, val []byte, rev uint64, live bool) {
	parts := strings.Split(key, ".")
	switch {
	case parts[0] == "c" && len(parts) == 4:
		if st := s.classOfPart(parts[1]); st != nil {
			st.slotSeen(key, parts[2], live)
		}
	case (parts[0] == "s" || parts[0] == "b") && len(parts) == 2:
		st := s.classOfPart(parts[1])
		if st == nil {
			return
		}
		if o := decodeOverride(val, rev); live && o != nil {
			s.setOverride(st, parts[0]+".", o, true)
		} else {
			s.clearOverride(st, parts[0]+".")
		}
	case parts[0] == "n" && len(parts) == 2:
		node, ok := unkp(parts[1])
		if !ok || node == s.node {
			return
		}
		var r nodeReport
		s.mu.Lock()
		defer s.mu.Unlock()
		if live && json.Unmarshal(val, &r) == nil {
			s.reports[node] = r
		} else {
			delete(s.reports, node)
		}
	}
}

// slotSeen records a slot taken or freed anywhere; a freed slot wakes the
// class.
func (st *class) slotSeen(key, sc string, live bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if live {
		st.slots[key] = sc
		return
	}
	if _, had := st.slots[key]; had {
		delete(st.slots, key)
		delete(st.probed, sc)
		st.notify()
	}
}

// sweep drops slots, overrides and reports the initial values of a new
// watch did not contain (they ended while no watch ran).
func (s *Shaper) sweep(seen map[string]bool) {
	s.mu.Lock()
	classes := make([]*class, 0, len(s.classes))
	for _, st := range s.classes {
		classes = append(classes, st)
	}
	for node := range s.reports {
		if !seen["n."+kp(node)] {
			delete(s.reports, node)
		}
	}
	s.mu.Unlock()
	for _, st := range classes {
		st.mu.Lock()
		for key, sc := range st.slots {
			if !seen[key] {
				delete(st.slots, key)
				delete(st.probed, sc)
			}
		}
		st.notify()
		st.mu.Unlock()
		for _, prefix := range []string{"s.", "b."} {
			if !seen[prefix+st.part] {
				s.clearOverride(st, prefix)
			}
		}
	}
}

// override returns the class's slot for prefix s. (rule action) or b.
// (backoff).
func (st *class) override(prefix string) *atomicOverride {
	if prefix == "b." {
		return &st.backoff
	}
	return &st.action
}

// setOverride caches o; from the watch (echo) an entry at the revision
// already cached is kept, so the node that began it keeps its own copy.
func (s *Shaper) setOverride(st *class, prefix string, o *override, echo bool) {
	p := st.override(prefix)
	if cur := p.Load(); echo && cur != nil && cur.rev == o.rev {
		return
	}
	p.Store(o)
	st.wake()
}

// clearOverride drops the cached override; its end is logged (and
// evented) here when this node began it and it ended early (Resume) or
// before its timer fired.
func (s *Shaper) clearOverride(st *class, prefix string) {
	prev := st.override(prefix).Swap(nil)
	if prev == nil {
		return
	}
	st.wake()
	if prev.Node == s.node && prev.ended.CompareAndSwap(false, true) {
		s.announce(st.Class, prev, s.now().Before(prev.Until))
	}
}
