package queuetest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/devtools/testport"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/rs/zerolog"
)

// NodeWait bounds starting a nats-server and a cluster agreeing on its
// streams (generous: tests run with -race on loaded machines).
const NodeWait = 60 * time.Second

// StartNATS starts a plain nats-server from so — loopback, a random client
// port unless so.Port is set, JetStream on, no signals, no log, no auth —
// and shuts it down at test end.
func StartNATS(t testing.TB, so *server.Options) *server.Server {
	t.Helper()
	ns, err := startNATS(t, so)
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

func startNATS(t testing.TB, so *server.Options) (*server.Server, error) {
	t.Helper()
	so.Host, so.NoSigs, so.NoLog, so.JetStream = "127.0.0.1", true, true, true
	if so.Port == 0 {
		so.Port = server.RANDOM_PORT
	}
	ns, err := server.NewServer(so)
	if err != nil {
		return nil, err
	}
	go ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(NodeWait) {
		ns.Shutdown()
		return nil, fmt.Errorf("nats-server %s did not start", so.ServerName)
	}
	return ns, nil
}

// Cluster is three JetStream nodes (n1, n2, n3) on loopback, routed to
// each other, each storing under its own temp dir.
type Cluster struct {
	Nodes []*server.Server
	opts  []*server.Options
}

// freePorts returns n loopback ports reserved for the test (testport).
func freePorts(t testing.TB, n int) []int { return testport.Ports(t, n) }

// StartCluster forms a three-node JetStream cluster (trying other route
// ports if one was taken meanwhile); its nodes are shut down at test end.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	var lastErr error
	for range 3 {
		ports := freePorts(t, 3)
		routes := make([]string, len(ports))
		for i, p := range ports {
			routes[i] = fmt.Sprintf("nats://127.0.0.1:%d", p)
		}
		c := &Cluster{}
		for i, p := range ports {
			so := &server.Options{
				ServerName: fmt.Sprintf("n%d", i+1), StoreDir: t.TempDir(),
				Cluster: server.ClusterOpts{Name: "jr-test", Host: "127.0.0.1", Port: p},
				Routes:  server.RoutesFromStr(strings.Join(routes, ",")),
			}
			ns, err := startNATS(t, so)
			if err != nil {
				lastErr = err
				break
			}
			c.Nodes, c.opts = append(c.Nodes, ns), append(c.opts, so)
		}
		if len(c.Nodes) == len(ports) {
			return c
		}
		for _, ns := range c.Nodes {
			ns.Shutdown()
		}
	}
	t.Fatalf("cluster did not form: %v", lastErr)
	return nil
}

// Node returns the running node named name, or nil.
func (c *Cluster) Node(name string) *server.Server {
	for _, ns := range c.Nodes {
		if ns.Name() == name && ns.Running() {
			return ns
		}
	}
	return nil
}

// Restart starts node name again with its store and route port.
func (c *Cluster) Restart(t testing.TB, name string) {
	t.Helper()
	for i, so := range c.opts {
		if so.ServerName != name {
			continue
		}
		again := *so
		c.Nodes[i] = StartNATS(t, &again)
		return
	}
	t.Fatalf("no node %s", name)
}

// OpenQueue opens a queue on url (a nats-server of StartNATS or
// StartCluster), polling until the servers agree on its streams — a new
// cluster elects its leaders first — and closes it at test end.
func OpenQueue(t testing.TB, url string, replicas int, log zerolog.Logger, po queue.PublishOptions) *queue.Queue {
	t.Helper()
	deadline := time.Now().Add(NodeWait)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		q, err := queue.Open(ctx, queue.Options{URL: url, Replicas: replicas, Logger: log, Publish: po})
		cancel()
		if err == nil {
			t.Cleanup(q.Close)
			return q
		}
		if time.Now().After(deadline) {
			t.Fatalf("open queue on %s: %v", url, err)
		}
		time.Sleep(100 * time.Millisecond) // polling: a new cluster electing its leaders
	}
}
