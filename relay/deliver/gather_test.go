package deliver_test

import (
	"testing"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/relaytest"
)

// The delivery event names the connection that took the mail: after the
// preferred MX refused, the next MX in the same (first) attempt. Which MX
// is tried when, and the EHLO name, are smtpclient's tests
// (TestMXPreferenceAndFallback there).
func TestDeliveryEventNamesTheMX(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	backup := h.mx()
	h.domain("fallback.test", h.closedIP(), backup.IP)
	cfg := h.config()
	cfg.Hostname = "ehlo.relay.test"
	h.start(cfg)

	h.send([]string{"b@fallback.test"})
	relaytest.Eventually(h.t, "delivered", func() bool {
		return backup.Received("b@fallback.test") == 1 && len(h.deliveries("b@fallback.test", events.StatusDelivered)) == 1
	})
	ev := h.deliveries("b@fallback.test", events.StatusDelivered)[0]
	if ev.MX != "mx2.fallback.test" || ev.IP != backup.IP || ev.Attempt != 1 || ev.Port != h.port {
		t.Fatalf("delivery event %v", ev)
	}
	if msgs := backup.Messages(); msgs[0].Helo != cfg.Hostname {
		t.Fatalf("EHLO name %q, want the configured hostname", msgs[0].Helo)
	}
	relaytest.Eventually(h.t, "queue empty", func() bool {
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
