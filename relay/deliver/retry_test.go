package deliver_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/ops"
	"github.com/jetrelay/jetrelay/relay/relaytest"
)

// downConfig is a configuration whose breaker stays open for ten minutes
// and whose retries wait an hour: within a test, only an operator retry
// brings a deferred entry back.
func (h *harness) downConfig() *config.Config {
	cfg := h.config()
	cfg.Delivery.Retry.Schedule = []config.Duration{config.Duration(time.Hour)}
	cfg.Delivery.Retry.MaxAge = config.Duration(48 * time.Hour)
	return cfg
}

// markDown sends one message to dom (whose MX refuses connections) and
// waits until its attempt marked the destination down, then sends n more
// and waits until each was deferred without connecting. It returns the
// recipients, the first one's (tried) first.
func (h *harness) markDown(dom string, n int) []string {
	h.t.Helper()
	rcpts := []string{"first@" + dom}
	h.send(rcpts)
	relaytest.Eventually(h.t, "destination marked down", func() bool { return h.log.Count("destination_down", nil) == 1 })
	for i := range n {
		rcpts = append(rcpts, fmt.Sprintf("u%d@%s", i, dom))
		h.send(rcpts[i+1:])
	}
	relaytest.Eventually(h.t, "every entry deferred", func() bool {
		for _, r := range rcpts {
			if len(h.deliveries(r, events.StatusDeferred)) == 0 {
				return false
			}
		}
		return true
	})
	relaytest.Eventually(h.t, "every entry scheduled", func() bool { return h.queued(queue.SubjScheduled) == n+1 })
	return rcpts
}

// attempts returns the stored attempt count of each entry of dom by its
// first recipient.
func (h *harness) attempts(dom string) map[string]int {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	items, err := h.q.List(ctx, queue.ListOptions{Domain: dom})
	if err != nil {
		h.t.Fatal(err)
	}
	out := map[string]int{}
	for _, it := range items {
		out[it.Env.Rcpts[0].Addr] = it.Env.Attempt
	}
	return out
}

// operator runs an operator action as `jetrelay queue` does.
func (h *harness) operator(a ops.Action, r ops.Request) ops.Report {
	h.t.Helper()
	op, err := ops.New(ops.Options{Queue: h.q, Actor: "test"})
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	rep, err := op.Do(ctx, a, r)
	if err != nil {
		h.t.Fatalf("%s: %v", a, err)
	}
	return rep
}

// delivered checks that rcpt got one copy and that its delivery event
// carries attempt number want.
func (h *harness) delivered(m *relaytest.MX, rcpt string, want int) {
	h.t.Helper()
	relaytest.Eventually(h.t, rcpt+" delivered", func() bool {
		return len(h.deliveries(rcpt, events.StatusDelivered)) == 1
	})
	if got := m.Received(rcpt); got != 1 {
		h.t.Fatalf("%s received %d copies, want 1", rcpt, got)
	}
	if ev := h.deliveries(rcpt, events.StatusDelivered)[0]; ev.Attempt != want {
		h.t.Fatalf("%s delivered as attempt %v, want %d", rcpt, ev.Attempt, want)
	}
}

// While a domain's MX refuses connections its destination is marked down
// and new entries are deferred without connecting: no attempt counted, no
// destination_failing. When the MX is back, `queue retry --domain` gets
// every entry delivered at once (the breaker would stay open for ten
// minutes, the schedules an hour), with attempt numbers that count only
// the one real attempt, and the down mark is cleared.
func TestOperatorRetryDuringDownWindow(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ip := h.closedIP()
	h.domain("down.test", ip)
	h.start(h.downConfig())
	rcpts := h.markDown("down.test", 12)

	for _, r := range rcpts[1:] {
		ev := h.deliveries(r, events.StatusDeferred)[0]
		if ev.Reason != "not_attempted" || ev.Attempt != 0 || ev.SMTPEnh != "4.4.1" {
			t.Fatalf("deferral of %s without connecting: %v", r, ev)
		}
	}
	for r, n := range h.attempts("down.test") {
		if want := map[bool]int{true: 1, false: 0}[r == rcpts[0]]; n != want {
			t.Fatalf("%s stored with %d attempts, want %d", r, n, want)
		}
	}
	if c := h.log.Count("destination_failing", nil); c != 0 {
		t.Fatalf("%d destination_failing lines after one attempt", c)
	}

	m := h.mx(relaytest.At(ip)) // the MX is back
	if rep := h.operator(ops.Retry, ops.Request{Domain: "down.test"}); rep.Done != len(rcpts) {
		t.Fatalf("retry: %+v, want %d made due", rep, len(rcpts))
	}
	h.delivered(m, rcpts[0], 2)
	for _, r := range rcpts[1:] {
		h.delivered(m, r, 1)
	}
	h.waitSettled(wait, 0)
	if h.log.Count("destination_retried", nil) == 0 {
		t.Fatal("no destination_retried line: the down mark was not cleared")
	}
	if c := h.log.Count("destination_failing", nil); c != 0 {
		t.Fatalf("%d destination_failing lines", c)
	}
	// The mark is gone: a new message connects at once.
	h.send([]string{"after@down.test"})
	h.delivered(m, "after@down.test", 1)
}

// A retry signal alone (what `queue retry` writes for every delivery
// process, queue.MarkRetried) clears the down mark: the next new entry
// for the domain connects instead of being deferred for the breaker's ten
// minutes.
func TestRetryMarkClearsDownMarkOfEveryProcess(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ip := h.closedIP()
	h.domain("mark.test", ip)
	h.start(h.downConfig())
	h.markDown("mark.test", 1)
	m := h.mx(relaytest.At(ip))

	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := h.q.MarkRetried(ctx, queue.RetryMark{Domain: "mark.test", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	relaytest.Eventually(h.t, "down mark cleared", func() bool { return h.log.Count("destination_retried", nil) == 1 })
	h.send([]string{"new@mark.test"})
	h.delivered(m, "new@mark.test", 1)
	if n := h.queued(queue.SubjScheduled); n != 2 {
		t.Fatalf("%d entries scheduled, want the 2 not retried", n)
	}
}

// `queue retry ID` of one entry of a down domain: that entry connects and
// is delivered at once; the domain's other entry keeps its schedule and
// its attempt count.
func TestOperatorRetryOfOneEntry(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ip := h.closedIP()
	h.domain("one.test", ip)
	h.start(h.downConfig())
	rcpts := h.markDown("one.test", 1)
	m := h.mx(relaytest.At(ip))

	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	items, err := h.q.List(ctx, queue.ListOptions{Domain: "one.test"})
	if err != nil {
		t.Fatal(err)
	}
	var id string
	for _, it := range items {
		if it.Env.Rcpts[0].Addr == rcpts[1] {
			id = it.Env.ID
		}
	}
	if rep := h.operator(ops.Retry, ops.Request{ID: id}); rep.Done != 1 {
		t.Fatalf("retry %s: %+v", id, rep)
	}
	h.delivered(m, rcpts[1], 1)
	h.waitSettled(wait, 1)
	if got := h.attempts("one.test"); len(got) != 1 || got[rcpts[0]] != 1 {
		t.Fatalf("entries left %v, want %s with its 1 attempt", got, rcpts[0])
	}
	if m.Received(rcpts[0]) != 0 {
		t.Fatalf("%s delivered without being retried", rcpts[0])
	}
}

// A domain that counts as failing has its entries parked; after the
// destination accepts again, `queue retry --domain` unparks them (and
// makes the rest due): all delivered at once, none parked again.
func TestOperatorRetryUnparksDomain(t *testing.T) {
	t.Parallel()
	const n = 15
	h := newHarness(t)
	m := h.mx()
	h.domain("parked.test", m.IP)
	m.ReplyMail(relaytest.Err(451, "4.3.0", "try again later"), -1)
	h.start(h.downConfig())
	h.sendMany(n, "parked.test")
	relaytest.Eventually(h.t, "every entry deferred", func() bool {
		for i := range n {
			if len(h.deliveries(fmt.Sprintf("u%d@parked.test", i), events.StatusDeferred)) == 0 {
				return false
			}
		}
		return true
	})
	relaytest.Eventually(h.t, "some entries parked", func() bool {
		p := h.queued(queue.SubjParked)
		return p > 0 && p+h.queued(queue.SubjScheduled) == n
	})
	failing := h.log.Count("destination_failing", nil)

	m.ReplyMail(nil, 0) // the destination accepts again
	if rep := h.operator(ops.Retry, ops.Request{Domain: "parked.test"}); rep.Done != n {
		t.Fatalf("retry: %+v, want %d made due", rep, n)
	}
	for i := range n {
		h.delivered(m, fmt.Sprintf("u%d@parked.test", i), 2)
	}
	h.waitSettled(wait, 0)
	if p := h.queued(queue.SubjParked); p != 0 {
		t.Fatalf("%d entries still parked", p)
	}
	if c := h.log.Count("destination_failing", nil); c != failing {
		t.Fatalf("destination_failing logged again after the retry (%d lines, %d before)", c, failing)
	}
}
