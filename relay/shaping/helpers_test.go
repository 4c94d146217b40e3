package shaping

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// testTimings are short leases and loops, so expiry happens within a test.
var testTimings = timings{slotTTL: 2 * time.Second, renewEvery: 500 * time.Millisecond,
	reportEvery: 200 * time.Millisecond, connPoll: 200 * time.Millisecond}

// startNATS runs a JetStream server on loopback for the test.
func startNATS(t *testing.T) *server.Server {
	t.Helper()
	return queuetest.StartNATS(t, &server.Options{StoreDir: t.TempDir()})
}

// testNode is one node: its own NATS connection and Shaper.
type testNode struct {
	s      *Shaper
	nc     *nats.Conn
	js     jetstream.JetStream
	events *eventLog
}

// eventLog records Options.Events calls.
type eventLog struct {
	mu sync.Mutex
	ch []Change
}

func (e *eventLog) add(c Change) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.ch = append(e.ch, c)
}

func (e *eventLog) all() []Change {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]Change(nil), e.ch...)
}

// startNode opens a Shaper named name on its own connection to ns.
func startNode(t *testing.T, ns *server.Server, name string, set Settings) *testNode {
	t.Helper()
	return startNodeLog(t, ns, name, set, zerolog.New(zerolog.NewTestWriter(t)))
}

func startNodeLog(t *testing.T, ns *server.Server, name string, set Settings, log zerolog.Logger) *testNode {
	t.Helper()
	return startNodeWith(t, ns, name, set, func(o *Options) { o.Logger = log })
}

// startNodeWith opens a node whose Options edit changes.
func startNodeWith(t *testing.T, ns *server.Server, name string, set Settings, edit func(*Options)) *testNode {
	t.Helper()
	nc, err := nats.Connect(ns.ClientURL(), nats.Name(name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	n := &testNode{nc: nc, js: js, events: &eventLog{}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	o := Options{JetStream: js, Node: name, Logger: zerolog.New(zerolog.NewTestWriter(t)), Events: n.events.add}
	edit(&o)
	n.s, err = open(ctx, o, set, testTimings)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.s.Close)
	return n
}

// provider is a Settings with one provider "p" (MX .p.example) limited to l.
func provider(l Limits, rules ...Rule) Settings {
	return Settings{Providers: []Provider{{Name: "p", MX: []string{".p.example"}, Limits: l}}, Rules: rules}
}

var classP = Class{Provider: "p", Key: "p"}

// connect connects or fails the test.
func connect(t *testing.T, n *testNode, c Class, source string) *Conn {
	t.Helper()
	conn, w, ok := n.s.Connect(context.Background(), c, source)
	if !ok {
		t.Fatalf("%s: connect %s: waits for %s until %s", n.s.node, c.Key, w.Reason, w.Until.Format(time.RFC3339Nano))
	}
	return conn
}

// refused asserts that Connect answers a Wait with reason.
func refused(t *testing.T, n *testNode, c Class, reason string) {
	t.Helper()
	conn, w, ok := n.s.Connect(context.Background(), c, "")
	if ok {
		conn.Release()
		t.Fatalf("%s: connect %s: allowed, want a wait for %s", n.s.node, c.Key, reason)
	}
	if w.Reason != reason {
		t.Fatalf("%s: connect %s: waits for %s, want %s", n.s.node, c.Key, w.Reason, reason)
	}
}

// tryConnect reports whether Connect succeeds now (releasing nothing).
func tryConnect(n *testNode, c Class) (*Conn, bool) {
	conn, _, ok := n.s.Connect(context.Background(), c, "")
	return conn, ok
}
