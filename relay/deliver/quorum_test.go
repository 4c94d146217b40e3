package deliver_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/devtools/testport"
	"github.com/jetrelay/jetrelay/relay/relaytest"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/rs/zerolog"
)

// freePort is a loopback TCP port reserved for the test (testport).
func freePort(t *testing.T) int { return testport.Port(t) }

// node is one server of a three-node JetStream cluster on loopback.
type node struct {
	name        string
	dir         string
	port, route int
	ns          *server.Server
}

func (n *node) start(t *testing.T, routes string) {
	t.Helper()
	ns, err := server.NewServer(&server.Options{ServerName: n.name, Host: "127.0.0.1", Port: n.port,
		JetStream: true, StoreDir: n.dir, NoSigs: true, NoLog: true,
		Cluster: server.ClusterOpts{Name: "lease", Host: "127.0.0.1", Port: n.route},
		Routes:  server.RoutesFromStr(routes)})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(wait) {
		t.Fatalf("%s did not start", n.name)
	}
	t.Cleanup(ns.Shutdown)
	n.ns = ns
}

func (n *node) stop() {
	n.ns.Shutdown()
	n.ns.WaitForShutdown()
}

// With two of three cluster nodes gone the queue has no quorum: delivery
// pauses (logged once); when they come back on their stores, delivery
// resumes without a restart and every entry is delivered.
func TestDeliveryResumesWhenQuorumReturns(t *testing.T) {
	t.Parallel()
	nodes := make([]*node, 3)
	var routes, urls []string
	for i := range nodes {
		nodes[i] = &node{name: fmt.Sprintf("n%d", i), dir: t.TempDir(), port: freePort(t), route: freePort(t)}
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", nodes[i].route))
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", nodes[i].port))
	}
	for _, n := range nodes {
		n.start(t, strings.Join(routes, ","))
	}
	h := newBareHarness(t)
	relaytest.Eventually(t, "the queue opened on the cluster", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		q, err := queue.Open(ctx, queue.Options{URL: strings.Join(urls, ","), Replicas: 3,
			Logger: zerolog.New(zerolog.NewTestWriter(t))})
		if err != nil {
			return false
		}
		t.Cleanup(q.Close)
		h.q = q
		return true
	})
	m := h.mx()
	h.domain("quorum.test", m.IP)
	h.start(h.config())
	h.sendMany(5, "quorum.test")
	relaytest.Eventually(t, "first entries delivered", func() bool { return len(m.Messages()) == 5 })

	keep := h.q.Conn().ConnectedServerName()
	var gone []*node
	for _, n := range nodes {
		if n.name != keep {
			n.stop()
			gone = append(gone, n)
		}
	}
	relaytest.Eventually(t, "delivery paused", func() bool { return h.log.Count("delivery_paused", nil) > 0 })
	for _, n := range gone {
		n.start(t, strings.Join(routes, ","))
	}
	for i := 5; i < 10; i++ {
		relaytest.Eventually(t, "an enqueue accepted", func() bool {
			env := &queue.Envelope{From: "a@sender.test", Domain: "quorum.test", Arrival: time.Now(),
				Rcpts: []queue.Recipient{{Addr: fmt.Sprintf("u%d@quorum.test", i)}}}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return h.q.Enqueue(ctx, &queue.Message{Body: []byte("Subject: x\r\n\r\nx\r\n"),
				Entries: []*queue.Envelope{env}}) == nil
		})
	}
	relaytest.Eventually(t, "every entry delivered", func() bool { return len(m.Messages()) >= 10 })
	counts(t, m, "quorum.test", 10)
	relaytest.Eventually(t, "resumption logged", func() bool { return h.log.Count("delivery_resumed", nil) > 0 })
	if c := h.log.Count("delivery_paused", nil); c != 1 {
		t.Errorf("%d delivery_paused lines for one outage, want 1", c)
	}
}
