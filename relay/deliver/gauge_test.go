package deliver_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/relaytest"
)

// connGauge is a smtpclient.Gauge that remembers its peak and its totals.
type connGauge struct {
	cur, peak, incs, decs atomic.Int64
}

func (g *connGauge) Inc() {
	g.incs.Add(1)
	n := g.cur.Add(1)
	for {
		p := g.peak.Load()
		if n <= p || g.peak.CompareAndSwap(p, n) {
			return
		}
	}
}

func (g *connGauge) Dec() {
	g.decs.Add(1)
	g.cur.Add(-1)
}

// The outbound connections gauge counts every TCP connection the engine
// opens, once, and is back at 0 when the engine has stopped, through every
// way a connection ends: QUIT after idling, a failed TLS handshake and the
// opportunistic plaintext retry, a greeting timeout, a drop mid-DATA.
// Refused connections are never counted.
func TestOutboundConnectionsGauge(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	good, broken, silent, drop := h.mx(), h.mx(relaytest.BrokenTLS()), h.mx(relaytest.Hang()), h.mx()
	h.domain("good.test", good.IP)
	h.domain("broken.test", broken.IP)
	h.domain("silent.test", h.closedIP(), silent.IP, good.IP)
	h.domain("drop.test", drop.IP)
	drop.DropData(1)
	g := &connGauge{}
	h.conns = g
	cfg := h.config()
	cfg.Delivery.Timeouts.Greeting = config.Duration(time.Second)
	stop := h.start(cfg)
	for _, r := range []string{"a@good.test", "b@broken.test", "c@silent.test", "d@drop.test"} {
		h.send([]string{r})
	}
	relaytest.Eventually(h.t, "all delivered", func() bool {
		for _, rcpt := range []string{"a@good.test", "b@broken.test", "c@silent.test", "d@drop.test"} {
			if len(h.deliveries(rcpt, events.StatusDelivered)) != 1 {
				return false
			}
		}
		return true
	})
	if g.peak.Load() == 0 {
		t.Error("gauge never above 0 during delivery")
	}
	stop()
	if cur, incs, decs := g.cur.Load(), g.incs.Load(), g.decs.Load(); cur != 0 || incs != decs {
		t.Fatalf("after stop: gauge %d (%d Inc, %d Dec), want 0", cur, incs, decs)
	}
	// One Inc per connection a server accepted (its Accept may lag the
	// client's connect): at least good, broken ×2, silent, drop ×2.
	servers := func() int64 {
		return int64(good.Connections() + broken.Connections() + silent.Connections() + drop.Connections())
	}
	relaytest.Eventually(h.t, "servers saw every counted connection", func() bool { return servers() == g.incs.Load() })
	if n := g.incs.Load(); n < 6 {
		t.Fatalf("%d connections counted, want at least 6", n)
	}
	t.Logf("%d connections counted, peak %d", g.incs.Load(), g.peak.Load())
}
