package shaping

import (
	"context"
	"sort"
	"sync"
	"testing"
	"time"
)

// sendSpan is one accepted Send: it was decided between before and after.
type sendSpan struct{ before, after time.Time }

// pump sends through conns (spread over goroutines) until total sends
// were accepted, waiting as a caller does, and returns the sends.
func pump(t *testing.T, conns []*Conn, total int) []sendSpan {
	t.Helper()
	var mu sync.Mutex
	var sends []sendSpan
	var wg sync.WaitGroup
	deadline := time.Now().Add(2 * time.Minute)
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				mu.Lock()
				enough := len(sends) >= total
				mu.Unlock()
				if enough {
					return
				}
				before := time.Now()
				w, ok := c.Send(context.Background())
				if !ok {
					waitFor(c.s.Changed(c.st.Class), w)
					continue
				}
				mu.Lock()
				sends = append(sends, sendSpan{before, time.Now()})
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(sends) < total {
		t.Fatalf("only %d of %d sends within the deadline", len(sends), total)
	}
	return sends
}

// checkPace fails when any window holds more sends than the rate allows:
// the sends i..j (by time) happened within after_j − before_i at most.
func checkPace(t *testing.T, sends []sendSpan, r Rate) {
	t.Helper()
	sort.Slice(sends, func(i, j int) bool { return sends[i].before.Before(sends[j].before) })
	T := r.Interval()
	for i := range sends {
		for j := i; j < len(sends); j++ {
			span := sends[j].after.Sub(sends[i].before)
			allowed := int(span/T) + r.Burst()
			if n := j - i + 1; n > allowed {
				t.Fatalf("%d sends within %s at %s (at most %d allowed)", n, span, r, allowed)
			}
		}
	}
}

// 600/m holds as a pace across two nodes with two connections each.
func TestPaceAcrossNodes(t *testing.T) {
	t.Parallel()
	ns := startNATS(t)
	r := Rate{Count: 600, Per: time.Minute}
	set := provider(Limits{Rate: r})
	a, b := startNode(t, ns, "a", set), startNode(t, ns, "b", set)
	conns := []*Conn{connect(t, a, classP, ""), connect(t, a, classP, ""), connect(t, b, classP, ""), connect(t, b, classP, "")}
	checkPace(t, pump(t, conns, 40), r)
}

// 60/m spaces sends about a second apart: three at most at once.
func TestSlowPaceAcrossNodes(t *testing.T) {
	t.Parallel()
	ns := startNATS(t)
	r := Rate{Count: 120, Per: time.Minute}
	set := provider(Limits{Rate: r})
	a, b := startNode(t, ns, "a", set), startNode(t, ns, "b", set)
	conns := []*Conn{connect(t, a, classP, ""), connect(t, b, classP, "")}
	checkPace(t, pump(t, conns, 8), r)
}

// connection_rate paces new connections across nodes.
func TestConnectionRateAcrossNodes(t *testing.T) {
	t.Parallel()
	ns := startNATS(t)
	r := Rate{Count: 300, Per: time.Minute}
	set := provider(Limits{ConnectionRate: r})
	nodes := []*testNode{startNode(t, ns, "a", set), startNode(t, ns, "b", set)}
	var mu sync.Mutex
	var opened []sendSpan
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := nodes[w%2]
			for {
				mu.Lock()
				enough := len(opened) >= 16
				mu.Unlock()
				if enough {
					return
				}
				before := time.Now()
				conn, wait, ok := n.s.Connect(context.Background(), classP, "")
				if !ok {
					waitFor(n.s.Changed(classP), wait)
					continue
				}
				mu.Lock()
				opened = append(opened, sendSpan{before, time.Now()})
				mu.Unlock()
				conn.Release()
			}
		}()
	}
	wg.Wait()
	checkPace(t, opened, r)
}

// Without KV the default's rate paces per node.
func TestDefaultRatePerNode(t *testing.T) {
	t.Parallel()
	ns := startNATS(t)
	r := Rate{Count: 600, Per: time.Minute}
	a := startNode(t, ns, "a", Settings{Default: Limits{Rate: r}})
	c := a.s.Classify("x.example", nil)
	checkPace(t, pump(t, []*Conn{connect(t, a, c, ""), connect(t, a, c, "")}, 20), r)
}
