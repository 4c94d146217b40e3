package shaping

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/relay/relaytest"
)

// Two connections for a provider hold across two nodes, and a release on
// one node lets the other connect.
func TestConnectionsHoldAcrossNodes(t *testing.T) {
	t.Parallel()
	ns := startNATS(t)
	set := provider(Limits{Connections: 2})
	a, b := startNode(t, ns, "a", set), startNode(t, ns, "b", set)
	ca := connect(t, a, classP, "")
	cb := connect(t, b, classP, "")
	refused(t, a, classP, ReasonConnections)
	refused(t, b, classP, ReasonConnections)

	woke := b.s.Changed(classP)
	ca.Release()
	relaytest.Eventually(t, "b's Changed after a's release", func() bool {
		select {
		case <-woke:
			return true
		default:
			return false
		}
	})
	cb2 := connect(t, b, classP, "")
	refused(t, a, classP, ReasonConnections)
	cb.Release()
	cb2.Release()
	cb2.Release() // twice is harmless
	// a learns of b's releases through the bucket's watch, not at once.
	relaytest.Eventually(t, "a connects after b released both slots", func() bool {
		conn, ok := tryConnect(a, classP)
		if ok {
			conn.Release()
		}
		return ok
	})
}

// Under churn from both nodes no more than two connections are ever open.
func TestConnectionsChurnAcrossNodes(t *testing.T) {
	t.Parallel()
	ns := startNATS(t)
	set := provider(Limits{Connections: 2})
	nodes := []*testNode{startNode(t, ns, "a", set), startNode(t, ns, "b", set)}
	var open, peak, done atomic.Int64
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := nodes[w%2]
			for done.Load() < 30 {
				conn, wait, ok := n.s.Connect(context.Background(), classP, "")
				if !ok {
					waitFor(n.s.Changed(classP), wait)
					continue
				}
				if v := open.Add(1); v > peak.Load() {
					peak.Store(v)
				}
				time.Sleep(5 * time.Millisecond) // the connection's work, not synchronisation
				open.Add(-1)
				conn.Release()
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	if p := peak.Load(); p > 2 {
		t.Fatalf("%d connections open at once, limit 2", p)
	}
}

// waitFor waits as a caller does: until w.Until or a change.
func waitFor(changed <-chan struct{}, w Wait) {
	t := time.NewTimer(time.Until(w.Until))
	defer t.Stop()
	select {
	case <-changed:
	case <-t.C:
	}
}

// A node that dies holding slots gives them back after their TTL.
func TestKilledHolderSlotReturns(t *testing.T) {
	t.Parallel()
	ns := startNATS(t)
	set := provider(Limits{Connections: 2})
	a, b := startNode(t, ns, "a", set), startNode(t, ns, "b", set)
	connect(t, a, classP, "")
	connect(t, a, classP, "")
	refused(t, b, classP, ReasonConnections)
	a.nc.Close() // a dies: no Release, no renewal

	relaytest.Eventually(t, "a slot of the dead node back on b", func() bool {
		conn, ok := tryConnect(b, classP)
		if ok {
			conn.Release()
		}
		return ok
	})
}

// Slots held by a live node stay held beyond their TTL (renewed).
func TestSlotsRenewedWhileHeld(t *testing.T) {
	t.Parallel()
	ns := startNATS(t)
	set := provider(Limits{Connections: 1})
	a, b := startNode(t, ns, "a", set), startNode(t, ns, "b", set)
	conn := connect(t, a, classP, "")
	ttlOver := time.Now().Add(3 * testTimings.slotTTL)
	relaytest.Eventually(t, "three slot TTLs", func() bool {
		refused(t, b, classP, ReasonConnections)
		return time.Now().After(ttlOver)
	})
	conn.Release()
	relaytest.Eventually(t, "the released slot on b", func() bool {
		c, ok := tryConnect(b, classP)
		if ok {
			c.Release()
		}
		return ok
	})
}

// per_source counts each source's connections apart.
func TestPerSourceSlots(t *testing.T) {
	t.Parallel()
	ns := startNATS(t)
	set := provider(Limits{Connections: 1, PerSource: true})
	a, b := startNode(t, ns, "a", set), startNode(t, ns, "b", set)
	connect(t, a, classP, "src-a")
	connect(t, b, classP, "src-b")
	if conn, w, ok := b.s.Connect(context.Background(), classP, "src-a"); ok || w.Reason != ReasonConnections {
		if ok {
			conn.Release()
		}
		t.Fatalf("second connection of source src-a allowed (%v) or waits for %q", ok, w.Reason)
	}
}

// Default limits are per node and per destination and write nothing.
func TestDefaultLimitsPerNodeAndDestination(t *testing.T) {
	t.Parallel()
	ns := startNATS(t)
	set := Settings{Default: Limits{Connections: 1, PerConnection: 2}}
	a, b := startNode(t, ns, "a", set), startNode(t, ns, "b", set)
	x, y := a.s.Classify("x.example", []string{"mx.x.example"}), a.s.Classify("y.example", nil)
	cx := connect(t, a, x, "")
	connect(t, a, y, "")
	connect(t, b, x, "") // another node: its own limit
	refused(t, a, x, ReasonConnections)
	for i := range 2 {
		if w, ok := cx.Send(context.Background()); !ok {
			t.Fatalf("send %d waits for %s", i+1, w.Reason)
		}
	}
	if w, ok := cx.Send(context.Background()); ok || w.Reason != ReasonPerConnection {
		t.Fatalf("third send on a per_connection 2 connection: ok %v, reason %q", ok, w.Reason)
	}
	kv, err := a.js.KeyValue(context.Background(), Bucket)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := kv.ListKeys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for k := range keys.Keys() {
		if !strings.HasPrefix(k, "n.") {
			t.Errorf("default limits wrote key %s", k)
		}
	}
}

// A canceled ctx is answered at once, without a connection.
func TestConnectCanceled(t *testing.T) {
	t.Parallel()
	ns := startNATS(t)
	a := startNode(t, ns, "a", provider(Limits{Connections: 1}))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if conn, w, ok := a.s.Connect(ctx, classP, ""); ok || conn != nil || w.Reason != ReasonCanceled {
		t.Fatalf("connect with a canceled ctx: %v %v %+v", conn, ok, w)
	}
	connect(t, a, classP, "").Release()
}
