package deliver_test

import (
	"testing"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/relaytest"
)

// MX preference: the most preferred MX gets the mail; when it refuses
// connections the next one does, in the same attempt.
func TestMXPreferenceAndFallback(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	primary, backup := h.mx(), h.mx()
	h.domain("pref.test", primary.IP, backup.IP)
	h.domain("fallback.test", h.closedIP(), backup.IP)
	h.start(h.config())

	h.send([]string{"a@pref.test"})
	h.send([]string{"b@fallback.test"})
	relaytest.Eventually(h.t, "both delivered", func() bool {
		return primary.Received("a@pref.test") == 1 && backup.Received("b@fallback.test") == 1 &&
			len(h.deliveries("b@fallback.test", events.StatusDelivered)) == 1
	})
	if backup.Received("a@pref.test") != 0 || primary.Received("b@fallback.test") != 0 {
		t.Fatal("mail went to the wrong MX")
	}
	ev := h.deliveries("b@fallback.test", events.StatusDelivered)[0]
	if ev.MX != "mx2.fallback.test" || ev.IP != backup.IP || ev.Attempt != 1 || ev.Port != h.port {
		t.Fatalf("delivery event %v", ev)
	}
	if msgs := primary.Messages(); msgs[0].Helo != "relay.test" {
		t.Fatalf("EHLO name %q, want the configured hostname", msgs[0].Helo)
	}
	relaytest.Eventually(h.t, "queue empty", func() bool {
		return h.queued(queue.SubjReady)+h.queued(queue.SubjScheduled) == 0
	})
}

// No MX records: the domain's own address is the MX (RFC 5321 §5.1).
func TestImplicitMX(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	m := h.mx()
	h.zone.AddA("implicit.test", m.IP)
	h.start(h.config())
	h.send([]string{"x@implicit.test"})
	relaytest.Eventually(h.t, "delivered", func() bool { return m.Received("x@implicit.test") == 1 })
}

// Null MX (RFC 7505): fails 5.1.10 at once without connecting anywhere,
// even though the domain has an address with a working server.
func TestNullMX(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	m := h.mx()
	h.zone.AddMX("null.test", 0, ".")
	h.zone.AddA("null.test", m.IP)
	h.start(h.config())
	h.send([]string{"x@null.test"})
	relaytest.Eventually(h.t, "reported failed", func() bool { return len(h.rep.failures("x@null.test")) == 1 })
	f := h.rep.failures("x@null.test")[0]
	if f.Enh != "5.1.10" || f.Code != 556 || f.Temporary {
		t.Fatalf("null MX result %+v", f)
	}
	if m.Connections() != 0 {
		t.Fatalf("%d connections to a null-MX domain", m.Connections())
	}
	relaytest.Eventually(h.t, "entry gone", func() bool {
		return h.queued(queue.SubjReady)+h.queued(queue.SubjScheduled) == 0
	})
}

// NXDOMAIN is permanent (5.1.2); SERVFAIL is temporary: the entry is
// deferred, and delivered once DNS answers again.
func TestNXDomainVersusServFail(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	m := h.mx()
	h.domain("flaky.test", m.IP)
	h.zone.SetServFail("flaky.test", true)
	h.start(h.config())

	h.send([]string{"x@missing.test"})
	h.send([]string{"y@flaky.test"})
	relaytest.Eventually(h.t, "NXDOMAIN reported", func() bool { return len(h.rep.failures("x@missing.test")) == 1 })
	if f := h.rep.failures("x@missing.test")[0]; f.Enh != "5.1.2" || f.Temporary {
		t.Fatalf("NXDOMAIN result %+v", f)
	}
	relaytest.Eventually(h.t, "SERVFAIL deferred", func() bool {
		return len(h.deliveries("y@flaky.test", events.StatusDeferred)) >= 1
	})
	ev := h.deliveries("y@flaky.test", events.StatusDeferred)[0]
	if ev.SMTPEnh != "4.4.3" || ev.NextAttempt == nil {
		t.Fatalf("SERVFAIL event %v", ev)
	}
	if len(h.rep.failures("y@flaky.test")) != 0 {
		t.Fatal("a SERVFAIL was reported as a failure")
	}
	h.zone.SetServFail("flaky.test", false)
	relaytest.Eventually(h.t, "delivered after DNS recovered", func() bool { return m.Received("y@flaky.test") == 1 })
	relaytest.Eventually(h.t, "queue empty", func() bool {
		return h.queued(queue.SubjReady)+h.queued(queue.SubjScheduled) == 0
	})
}

// An MX named by an IP address is skipped; an MX target that is a CNAME
// is followed (with a warning).
func TestMXNameQuirks(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	m := h.mx()
	h.zone.AddMX("quirk.test", 5, m.IP) // "MX 5 127.0.0.x": invalid, skipped
	h.zone.AddMX("quirk.test", 10, "alias.quirk.test")
	h.zone.AddCNAME("alias.quirk.test", "real.quirk.test")
	h.zone.AddA("real.quirk.test", m.IP)
	h.start(h.config())
	h.send([]string{"x@quirk.test"})
	relaytest.Eventually(h.t, "delivered via the CNAME target", func() bool {
		return m.Received("x@quirk.test") == 1 && len(h.deliveries("x@quirk.test", events.StatusDelivered)) == 1
	})
	if ev := h.deliveries("x@quirk.test", events.StatusDelivered)[0]; ev.MX != "alias.quirk.test" {
		t.Fatalf("delivered via %v", ev.MX)
	}
	if m.Connections() != 1 {
		t.Fatalf("%d connections: the IP-literal MX was used", m.Connections())
	}
}
