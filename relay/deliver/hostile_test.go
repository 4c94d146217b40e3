package deliver_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/relaytest"
	"github.com/jetrelay/jetrelay/relay/safetext"
	"github.com/jetrelay/jetrelay/relay/smtpclient"
)

// Twenty domains whose MX hosts are three servers that accept TCP and
// never greet share one destination, so they hold at most its
// max_per_destination slots, and mail to a healthy domain arrives while
// they are still hanging.
func TestNeverGreetingDomainsDoNotDelayHealthyMail(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	good := h.mx()
	h.domain("healthy.test", good.IP)
	var silent []*relaytest.RawMX
	for i := 1; i <= 3; i++ {
		m := relaytest.FakeRawMX(t, &relaytest.RawMX{NoGreeting: true}, h.port)
		silent = append(silent, m)
		h.zone.AddA(fmt.Sprintf("mx%d.silent.test", i), m.IP)
	}
	for d := 0; d < 20; d++ {
		dom := fmt.Sprintf("w%d.silent.test", d)
		for i := 1; i <= 3; i++ {
			h.zone.AddMX(dom, uint16(10*i), fmt.Sprintf("mx%d.silent.test", i))
		}
	}
	cfg := h.config()
	cfg.Delivery.MaxConnections, cfg.Delivery.MaxPerDestination = 20, 2
	cfg.Delivery.Timeouts.Greeting = config.Duration(time.Minute) // they hang for the whole test
	cfg.Delivery.ShutdownGrace = config.Duration(time.Second)
	h.start(cfg)
	for d := 0; d < 20; d++ {
		for n := 0; n < 3; n++ {
			h.send([]string{fmt.Sprintf("u%d@w%d.silent.test", n, d)})
		}
	}
	hanging := func() (open, total int) {
		for _, m := range silent {
			open, total = open+m.Hanging(), total+m.Connections()
		}
		return open, total
	}
	relaytest.Eventually(h.t, "the silent MXs holding connections", func() bool {
		open, _ := hanging()
		return open > 0
	})
	h.send([]string{"x@healthy.test"})
	relaytest.Eventually(h.t, "healthy message delivered", func() bool { return good.Received("x@healthy.test") == 1 })
	open, total := hanging()
	if open == 0 {
		t.Fatal("the never-greeting servers were no longer hanging: the healthy message waited for them")
	}
	if total > cfg.Delivery.MaxPerDestination {
		t.Fatalf("%d connections to the shared silent destination (max_per_destination %d)",
			total, cfg.Delivery.MaxPerDestination)
	}
}

// MX → a loopback address, without delivery.allowed_networks: the
// recipient fails 550 5.4.4 (not naming the address) and nothing is
// dialled; "MX 10 localhost." too.
func TestDeniedNetworkNotDialled(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	m := h.mx()
	h.domain("inside.test", m.IP)
	h.zone.AddMX("lh.test", 10, "localhost")
	h.zone.AddA("localhost", "127.0.0.1")
	cfg := h.config()
	cfg.Delivery.AllowedNetworks = nil
	h.start(cfg)
	h.send([]string{"x@inside.test"})
	h.send([]string{"y@lh.test"})
	for _, rcpt := range []string{"x@inside.test", "y@lh.test"} {
		relaytest.Eventually(h.t, rcpt+" failed", func() bool { return len(h.rep.failures(rcpt)) == 1 })
		f := h.rep.failures(rcpt)[0]
		if f.Code != 550 || f.Enh != "5.4.4" || f.Temporary || strings.Contains(f.Text, "127.") {
			t.Fatalf("%s: %+v", rcpt, f)
		}
	}
	if m.Connections() != 0 {
		t.Fatalf("%d connections to a denied address", m.Connections())
	}
	relaytest.Eventually(h.t, "queue empty", func() bool {
		return h.queued(queue.SubjReady)+h.queued(queue.SubjScheduled) == 0
	})
}

// Hostile replies to MAIL — one endless line, 12 MB of lines — defer the
// entry with 451 4.5.0; the retry is stored (its reply is bounded) and no
// event carries more than 4 KiB of reply.
func TestHostileRepliesDeferBounded(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.mx() // fixes the port
	line := relaytest.FakeRawMX(t, &relaytest.RawMX{Mail: relaytest.StreamLine("250", 256<<20)}, h.port)
	lines := relaytest.FakeRawMX(t, &relaytest.RawMX{Mail: relaytest.ManyLines("450", 12<<20)}, h.port)
	h.domain("line.test", line.IP)
	h.domain("lines.test", lines.IP)
	cfg := h.config()
	cfg.Delivery.Retry.Schedule = []config.Duration{config.Duration(time.Hour)}
	h.start(cfg)
	h.send([]string{"x@line.test"})
	h.send([]string{"y@lines.test"})
	for _, rcpt := range []string{"x@line.test", "y@lines.test"} {
		relaytest.Eventually(h.t, rcpt+" deferred", func() bool {
			return len(h.deliveries(rcpt, events.StatusDeferred)) == 1
		})
		ev := h.deliveries(rcpt, events.StatusDeferred)[0]
		if ev.SMTPCode != 451 || ev.SMTPEnh != "4.5.0" ||
			len(ev.Reply) > safetext.MaxReply+len(safetext.TruncatedMark) {
			t.Fatalf("%s: event %v", rcpt, ev)
		}
	}
	relaytest.Eventually(h.t, "both retries stored", func() bool { return h.queued(queue.SubjScheduled) == 2 })
}

// panicDialer panics on its first dial, then dials like next.
type panicDialer struct {
	next   *relaytest.LoopbackDialer
	calls  atomic.Int32
	panics int32
}

func (d *panicDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if d.calls.Add(1) <= d.panics {
		panic("injected dialer panic")
	}
	return d.next.DialContext(ctx, network, addr)
}

// A panic in a delivery goroutine is recovered: the entry is deferred
// (451 4.3.0), not lost, and delivered on its retry.
func TestDeliveryPanicRecovered(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	m := h.mx()
	h.domain("panic.test", m.IP)
	h.dialer = &panicDialer{next: &relaytest.LoopbackDialer{}, panics: 1}
	h.start(h.config())
	h.send([]string{"x@panic.test"})
	relaytest.Eventually(h.t, "delivered after the panic", func() bool {
		return m.Received("x@panic.test") == 1 && len(h.deliveries("x@panic.test", events.StatusDelivered)) == 1
	})
	def := h.deliveries("x@panic.test", events.StatusDeferred)
	if len(def) != 1 || def[0].SMTPEnh != "4.3.0" {
		t.Fatalf("deferral after the panic: %v", def)
	}
	relaytest.Eventually(h.t, "queue empty", func() bool {
		return h.queued(queue.SubjReady)+h.queued(queue.SubjScheduled) == 0
	})
}

// panicResolver panics on its first MX lookup, then asks next.
type panicResolver struct {
	smtpclient.Resolver
	calls atomic.Int32
}

func (r *panicResolver) LookupMX(ctx context.Context, d string) ([]smtpclient.MX, time.Duration, error) {
	if r.calls.Add(1) == 1 {
		panic("injected resolver panic")
	}
	return r.Resolver.LookupMX(ctx, d)
}

// A resolver that panics (here while the entry's destination is looked
// up, off the dispatcher) costs a deferral, not the process or the entry.
func TestResolverPanicRecovered(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	m := h.mx()
	h.domain("rpanic.test", m.IP)
	h.wrapRes = func(r smtpclient.Resolver) smtpclient.Resolver { return &panicResolver{Resolver: r} }
	h.start(h.config())
	h.send([]string{"x@rpanic.test"})
	relaytest.Eventually(h.t, "delivered after the panic", func() bool {
		return m.Received("x@rpanic.test") == 1 && len(h.deliveries("x@rpanic.test", events.StatusDelivered)) == 1
	})
	// Then the lookup that panicked counts as a temporary DNS failure for
	// its short cache time, so more deferrals may follow.
	if def := h.deliveries("x@rpanic.test", events.StatusDeferred); len(def) == 0 || def[0].SMTPEnh != "4.3.0" {
		t.Fatalf("deferral after the panic: %v", def)
	}
}
