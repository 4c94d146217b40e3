package queue_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/rs/zerolog"
)

// Test servers for the publish tests: plain nats-servers (no auth) built
// from server.Options, standalone or as a three-node JetStream cluster on
// loopback, and a TCP proxy that can lose a server's replies.

const nodeWait = 60 * time.Second

// startNode starts a nats-server from so (loopback, random client port,
// no signals, no log) and shuts it down at test end.
func startNode(t testing.TB, so *server.Options) (*server.Server, error) {
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
	if !ns.ReadyForConnections(nodeWait) {
		ns.Shutdown()
		return nil, fmt.Errorf("nats-server %s did not start", so.ServerName)
	}
	return ns, nil
}

// cluster is three JetStream nodes routed to each other.
type cluster struct {
	nodes []*server.Server
	opts  []*server.Options
}

// freePorts returns n loopback ports that were free a moment ago.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// startCluster forms a three-node JetStream cluster (retrying with other
// route ports if one was taken meanwhile).
func startCluster(t testing.TB) *cluster {
	t.Helper()
	var lastErr error
	for range 3 {
		ports := freePorts(t, 3)
		routes := make([]string, len(ports))
		for i, p := range ports {
			routes[i] = fmt.Sprintf("nats://127.0.0.1:%d", p)
		}
		c := &cluster{}
		for i, p := range ports {
			so := &server.Options{
				ServerName: fmt.Sprintf("n%d", i+1), StoreDir: t.TempDir(),
				Cluster: server.ClusterOpts{Name: "jr-test", Host: "127.0.0.1", Port: p},
				Routes:  server.RoutesFromStr(strings.Join(routes, ",")),
			}
			ns, err := startNode(t, so)
			if err != nil {
				lastErr = err
				break
			}
			c.nodes, c.opts = append(c.nodes, ns), append(c.opts, so)
		}
		if len(c.nodes) == len(ports) {
			return c
		}
		for _, ns := range c.nodes {
			ns.Shutdown()
		}
	}
	t.Fatalf("cluster did not form: %v", lastErr)
	return nil
}

// node returns the running node named name.
func (c *cluster) node(name string) *server.Server {
	for _, ns := range c.nodes {
		if ns.Name() == name && ns.Running() {
			return ns
		}
	}
	return nil
}

// restart starts node name again with its options (store, route port).
func (c *cluster) restart(t testing.TB, name string) {
	t.Helper()
	for i, so := range c.opts {
		if so.ServerName != name {
			continue
		}
		again := *so
		ns, err := startNode(t, &again)
		if err != nil {
			t.Fatalf("restart %s: %v", name, err)
		}
		c.nodes[i] = ns
		return
	}
	t.Fatalf("no node %s", name)
}

// openQueue opens a queue on url (polling until the servers agree on the
// streams: a fresh cluster elects its meta leader first).
func openQueue(t testing.TB, url string, replicas int, log zerolog.Logger, po queue.PublishOptions) *queue.Queue {
	t.Helper()
	deadline := time.Now().Add(nodeWait)
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
		time.Sleep(100 * time.Millisecond) // a new cluster electing its leaders; polling
	}
}

// lossyProxy forwards TCP connections to a server; while losing is set it
// drops what the server sends (its replies and acks are lost on the way),
// and cut closes every connection so that clients reconnect.
type lossyProxy struct {
	ln     net.Listener
	target string
	losing atomic.Bool
	mu     sync.Mutex
	conns  []net.Conn
}

func startProxy(t testing.TB, target string) *lossyProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &lossyProxy{ln: ln, target: target}
	t.Cleanup(func() { ln.Close(); p.cut() })
	go p.serve()
	return p
}

func (p *lossyProxy) url() string { return "nats://" + p.ln.Addr().String() }

func (p *lossyProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.DialTimeout("tcp", p.target, nodeWait)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		go func() { _, _ = io.Copy(s, c) }()
		go p.down(c, s)
	}
}

// down copies server to client, dropping what arrives while losing.
func (p *lossyProxy) down(c, s net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := s.Read(buf)
		if n > 0 && !p.losing.Load() {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			c.Close()
			return
		}
	}
}

// cut closes every proxied connection.
func (p *lossyProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// syncBuffer is a log sink tests can read while it is written.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testLog logs to the test and to buf.
func testLog(t testing.TB, buf *syncBuffer) zerolog.Logger {
	return zerolog.New(io.MultiWriter(zerolog.NewTestWriter(t), buf)).Level(zerolog.DebugLevel)
}
