package deliver_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/relaytest"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/rs/zerolog"
)

// natsServer runs a nats-server on loopback storing JetStream (unless
// noJS) under dir, on port (-1: a free one), shut down at test end. It
// stands for a node of an external cluster that can be stopped and
// started again on the same store and port.
func natsServer(t *testing.T, dir string, port int, noJS bool) *server.Server {
	t.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, JetStream: !noJS, StoreDir: dir,
		NoSigs: true, NoLog: true, ServerName: "lease-test"})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(wait) {
		t.Fatal("nats-server did not start")
	}
	t.Cleanup(ns.Shutdown)
	return ns
}

// openQueue opens the queue on the NATS server at url with lease time
// ackWait, closed at test end.
func openQueue(t *testing.T, url string, ackWait time.Duration) *queue.Queue {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	q, err := queue.Open(ctx, queue.Options{URL: url, AckWait: ackWait, Logger: zerolog.New(zerolog.NewTestWriter(t)),
		Name: t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(q.Close)
	return q
}

// on is a copy of h whose engines use q (another node's connection).
func (h *harness) on(q *queue.Queue) *harness {
	h2 := *h
	h2.q = q
	return &h2
}

// slowDialer dials on loopback and delays every read by delay: a slow
// receiving server.
type slowDialer struct{ delay time.Duration }

func (d slowDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	c, err := (&relaytest.LoopbackDialer{}).DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	return slowConn{Conn: c, delay: d.delay}, nil
}

type slowConn struct {
	net.Conn
	delay time.Duration
}

func (c slowConn) Read(p []byte) (int, error) {
	time.Sleep(c.delay) // the simulated server's slowness, not synchronisation
	return c.Conn.Read(p)
}

// redirectDialer dials addr whatever it is asked for.
type redirectDialer struct{ addr string }

func (d redirectDialer) DialContext(ctx context.Context, network, _ string) (net.Conn, error) {
	return (&relaytest.LoopbackDialer{}).DialContext(ctx, network, d.addr)
}

// proxy forwards loopback TCP connections to target until cut, which
// closes its listener and every connection at once: to the server, the
// client behind it vanished as if killed, and it cannot reconnect.
func proxy(t *testing.T, target string) (addr string, cut func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	conns := []net.Conn{} // nil once cut
	track := func(c net.Conn) bool {
		mu.Lock()
		defer mu.Unlock()
		if conns == nil {
			return false
		}
		conns = append(conns, c)
		return true
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil || !track(c) || !track(s) {
				c.Close()
				if s != nil {
					s.Close()
				}
				continue
			}
			go func() { _, _ = io.Copy(s, c); s.Close() }()
			go func() { _, _ = io.Copy(c, s); c.Close() }()
		}
	}()
	var once sync.Once
	cut = func() {
		once.Do(func() {
			ln.Close()
			mu.Lock()
			defer mu.Unlock()
			for _, c := range conns {
				c.Close()
			}
			conns = nil
		})
	}
	t.Cleanup(cut)
	return ln.Addr().String(), cut
}

// counts returns how often each of n recipients u<i>@dom reached m, and
// fails unless every one did at least once.
func counts(t *testing.T, m *relaytest.MX, dom string, n int) map[string]int {
	t.Helper()
	seen := map[string]int{}
	for _, msg := range m.Messages() {
		for _, r := range msg.Rcpts {
			seen[r]++
		}
	}
	for i := 0; i < n; i++ {
		if seen[fmt.Sprintf("u%d@%s", i, dom)] == 0 {
			t.Fatalf("u%d@%s never delivered", i, dom)
		}
	}
	return seen
}

func natsURL(ns *server.Server) string { return "nats://" + ns.Addr().String() }

func natsPort(ns *server.Server) int { return ns.Addr().(*net.TCPAddr).Port }

// A node that vanishes (kill -9, or cut off the network) leaves the
// entries it leased; another node delivers them after AckWait, each once
// (the vanished node's server never answered). With the default 20 s
// lease that is within the 30 s a cluster promises; here it is 2 s.
func TestVanishedNodesEntriesAreRedelivered(t *testing.T) {
	t.Parallel()
	const n, ackWait = 20, 2 * time.Second
	h := newBareHarness(t)
	ns := natsServer(t, t.TempDir(), -1, false)
	addr, cut := proxy(t, ns.Addr().String())
	good := h.mx()
	dead := h.mx(relaytest.Hang())
	h.domain("vanish.test", good.IP)
	b := h.on(openQueue(t, natsURL(ns), ackWait))
	a := h.on(openQueue(t, "nats://"+addr, ackWait))
	a.dialer = redirectDialer{addr: net.JoinHostPort(dead.IP, strconv.Itoa(dead.Port))}
	a.sendMany(n, "vanish.test")
	cfg := h.config()
	cfgA := h.config()
	cfgA.Delivery.ShutdownGrace = config.Duration(time.Second)
	cfgA.Delivery.Timeouts.Greeting = config.Duration(10 * time.Minute) // A holds, nothing fails
	a.start(cfgA)
	relaytest.Eventually(t, "node A holding every entry", func() bool {
		return dead.Connections() > 0 && b.leased() == n
	})
	cut()
	gone := time.Now()
	b.start(cfg)
	relaytest.Eventually(t, "every entry delivered by node B", func() bool { return len(good.Messages()) >= n })
	t.Logf("node A's %d entries delivered %s after it vanished (AckWait %s)", n,
		time.Since(gone).Round(time.Millisecond), ackWait)
	relaytest.Eventually(t, "queue empty", func() bool { return b.queued(queue.SubjReady) == 0 })
	for r, c := range counts(t, good, "vanish.test", n) {
		if c != 1 {
			t.Errorf("%s delivered %d times", r, c)
		}
	}
}

// A node stopped gracefully hands back at once every entry it pulled but
// did not start (the lease is 10 minutes here, so only a hand-back gets
// them delivered in time) and finishes the ones in flight: the other node
// delivers the rest, and duplicates are at most the stopped node's
// deliveries in flight.
func TestStoppedNodeHandsBackItsEntries(t *testing.T) {
	t.Parallel()
	const n, conns = 300, 4
	h := newBareHarness(t)
	ns := natsServer(t, t.TempDir(), -1, false)
	m := h.mx()
	h.domain("stop.test", m.IP)
	a := h.on(openQueue(t, natsURL(ns), 10*time.Minute))
	b := h.on(openQueue(t, natsURL(ns), 10*time.Minute))
	a.dialer, b.dialer = slowDialer{delay: 5 * time.Millisecond}, slowDialer{delay: 5 * time.Millisecond}
	a.sendMany(n, "stop.test")
	cfg := h.config()
	cfg.Delivery.MaxConnections, cfg.Delivery.MaxPerDestination = conns, conns
	stopA := a.start(cfg)
	b.start(cfg)
	relaytest.Eventually(t, "a tenth delivered", func() bool { return len(m.Messages()) >= n/10 })
	stopA()
	relaytest.Eventually(t, "every entry delivered", func() bool { return len(m.Messages()) >= n })
	relaytest.Eventually(t, "queue empty", func() bool { return b.queued(queue.SubjReady) == 0 })
	dups := 0
	for _, c := range counts(t, m, "stop.test", n) {
		dups += c - 1
	}
	t.Logf("%d duplicates", dups)
	if dups > conns {
		t.Errorf("%d duplicates; at most the stopped node's %d deliveries in flight may repeat", dups, conns)
	}
}

// A delivery that takes longer than the lease keeps it by heartbeats: the
// entry is not handed to another worker meanwhile.
func TestHeartbeatsKeepALongDeliveryLeased(t *testing.T) {
	t.Parallel()
	h := newBareHarness(t)
	ns := natsServer(t, t.TempDir(), -1, false)
	h.q = openQueue(t, natsURL(ns), time.Second)
	m := h.mx()
	h.domain("long.test", m.IP)
	h.dialer = slowDialer{delay: 700 * time.Millisecond} // a transaction of several seconds
	h.send([]string{"x@long.test"})
	h.start(h.config())
	relaytest.Eventually(t, "delivered", func() bool { return m.Received("x@long.test") > 0 })
	relaytest.Eventually(t, "acknowledged", func() bool { return h.queued(queue.SubjReady) == 0 })
	if c := m.Received("x@long.test"); c != 1 {
		t.Fatalf("delivered %d times: the lease expired during the transaction", c)
	}
}

// JetStream going away (its server restarted, or up without JetStream as
// a cluster without quorum answers) pauses delivery, logged once; when it
// is back, delivery resumes without a restart and every entry is delivered.
func TestDeliveryResumesWhenJetStreamReturns(t *testing.T) {
	t.Parallel()
	h := newBareHarness(t)
	dir := t.TempDir()
	ns := natsServer(t, dir, -1, false)
	p := natsPort(ns)
	h.q = openQueue(t, natsURL(ns), 0)
	m := h.mx()
	h.domain("back.test", m.IP)
	h.start(h.config())
	h.sendMany(5, "back.test")
	relaytest.Eventually(t, "first entries delivered", func() bool { return len(m.Messages()) == 5 })

	ns.Shutdown()
	ns.WaitForShutdown()
	relaytest.Eventually(t, "connection lost", func() bool { return !h.q.Conn().IsConnected() })
	noJS := natsServer(t, dir, p, true) // reachable, but no JetStream
	relaytest.Eventually(t, "delivery paused", func() bool { return h.log.Count("delivery_paused", nil) > 0 })
	noJS.Shutdown()
	noJS.WaitForShutdown()
	natsServer(t, dir, p, false)
	relaytest.Eventually(t, "reconnected", func() bool { return h.q.Conn().IsConnected() })

	for i := 5; i < 10; i++ {
		h.send([]string{fmt.Sprintf("u%d@back.test", i)})
	}
	relaytest.Eventually(t, "every entry delivered", func() bool { return len(m.Messages()) >= 10 })
	counts(t, m, "back.test", 10)
	relaytest.Eventually(t, "resumption logged", func() bool { return h.log.Count("delivery_resumed", nil) == 1 })
	if c := h.log.Count("delivery_paused", nil); c != 1 {
		t.Errorf("%d delivery_paused lines for one outage, want 1", c)
	}
}

// newBareHarness is a harness without a queue of its own (tests open
// theirs on a nats-server they control).
func newBareHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{t: t, dataDir: t.TempDir(), zone: relaytest.NewZone(), rep: &reporter{}, log: &relaytest.Events{}}
	h.dns = relaytest.FakeDNS(t, h.zone)
	return h
}

// leased is the delivery consumer's count of entries leased and not acknowledged.
func (h *harness) leased() int {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	c, err := h.q.JetStream().Consumer(ctx, queue.StreamName, queue.ConsumerName)
	if err != nil {
		h.t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	return info.NumAckPending
}
