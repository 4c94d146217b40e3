package deliver_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/relaytest"
)

// A destination that keeps deferring: once it counts as failing its
// entries are parked, and while parked only one probe per wake-up is tried
// (with a retry schedule of 1 s, every entry would otherwise come back
// every second). Once the destination accepts again, a delivered probe
// brings the rest back: each recipient gets the message exactly once and
// the queue ends empty.
func TestParkedDomainProbesThenRecovers(t *testing.T) {
	t.Parallel()
	const n = 40
	h := newHarness(t)
	m := h.mx()
	h.domain("flaky.test", m.IP)
	m.ReplyMail(relaytest.Err(451, "4.3.0", "try again later"), -1)
	cfg := h.config()
	cfg.Delivery.Retry.Schedule = []config.Duration{config.Duration(time.Second)}
	h.sendMany(n, "flaky.test")
	h.start(cfg)

	relaytest.Eventually(h.t, "every entry parked", func() bool { return h.queued(queue.SubjParked) == n })
	if s := h.queued(queue.SubjScheduled); s != 0 {
		t.Fatalf("%d entries with their own schedules besides %d parked", s, n)
	}
	deferred := func() int {
		c := 0
		for i := range n {
			c += len(h.deliveries(fmt.Sprintf("u%d@flaky.test", i), events.StatusDeferred))
		}
		return c
	}
	startAttempts, startWakes := deferred(), h.log.Count("domain_wakeup", nil)
	relaytest.Eventually(h.t, "three more wake-ups", func() bool {
		return h.log.Count("domain_wakeup", nil) >= startWakes+3
	})
	wakes := h.log.Count("domain_wakeup", nil) - startWakes
	if got := deferred() - startAttempts; got > wakes+1 {
		t.Fatalf("%d attempts during %d wake-ups of a parked domain; want one probe each", got, wakes)
	}
	if h.log.Count("domain_unparking", nil) != 0 {
		t.Fatal("unparking a domain whose probes all failed")
	}

	m.ReplyMail(nil, 0) // the destination is back
	relaytest.Eventually(h.t, "every recipient delivered", func() bool { return len(m.Messages()) >= n })
	h.waitSettled(wait, 0)
	for i := range n {
		if got := m.Received(fmt.Sprintf("u%d@flaky.test", i)); got != 1 {
			t.Fatalf("u%d@flaky.test received %d copies, want 1", i, got)
		}
	}
	if h.log.Count("domain_unparking", nil) == 0 {
		t.Fatal("no domain_unparking line after a probe was delivered")
	}
}
