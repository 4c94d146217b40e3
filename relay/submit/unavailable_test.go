package submit

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/jetrelay/jetrelay/relay/admin"
	"github.com/jetrelay/jetrelay/relay/bounce"
)

// TestJetStreamGoneAnswers451: with the NATS server gone (the connection
// waiting to reconnect, not closed), DATA is answered 451 4.3.0 once the
// publish budget is spent — not after a minute, never 5xx — and the
// session goes on. When the server is back, the message accepted before is
// there and the refused one is not.
func TestJetStreamGoneAnswers451(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	q := queuetest.RunJetStream(t, queuetest.Options{DataDir: dir})
	h := start(t, testConfig(t), harnessOpts{queue: q})
	c := h.login(lnImplicit, appUser, appPass)
	accepted := sendRaw(t, c, "MAIL FROM:<a@example.com>", "RCPT TO:<x@one.test>", message("a@example.com", ""))
	q.Embedded().Shutdown()
	q.Embedded().WaitForShutdown()

	c.expect("MAIL FROM:<a@example.com>", 250, "")
	c.expect("RCPT TO:<y@two.test>", 250, "")
	c.expect("DATA", 354, "")
	c.send(message("a@example.com", "") + ".\r\n")
	start := time.Now()
	r := c.read()
	took := time.Since(start)
	t.Logf("reply with JetStream gone after %s: %v", took, r)
	if r.Code != 451 || r.Enh != "4.3.0" {
		t.Fatalf("end of DATA with JetStream gone: %v, want 451 4.3.0", r)
	}
	if took > storeTimeout+testTimeout/2 { // a bound, not a speed target: it used to wait a minute
		t.Fatalf("reply took %s", took)
	}
	if ev := h.logs.events("enqueue_error"); len(ev) != 1 || ev[0]["unavailable"] != true {
		t.Fatalf("enqueue_error lines: %v, want one with unavailable=true", ev)
	}
	c.expect("RSET", 250, "")
	c.expect("MAIL FROM:<a@example.com>", 250, "")
	c.expect("RCPT TO:<z@three.test>", 250, "")
	c.expect("QUIT", 221, "")

	q.Close()
	q2 := queuetest.RunJetStream(t, queuetest.Options{DataDir: dir})
	if _, ok := leaseFrom(t, q2, 1)[accepted+"/one.test"]; !ok {
		t.Fatal("the message accepted before the server went is lost")
	}
	if n := queuetest.StreamMsgs(t, q2); n != 1 {
		t.Fatalf("%d messages in the queue; want only the accepted one", n)
	}
}

// TestSuppressionUnavailableFailsOpen: when the suppression list cannot be
// read (its JetStream is gone), RCPT does not wait for it beyond the
// policy-read timeout (the next RCPT, within the pause, not at all) and
// accepts the recipient; the failures are logged once per interval and
// counted, and the message is stored as usual.
func TestSuppressionUnavailableFailsOpen(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	sq := queuetest.RunJetStream(t) // the list on a server of its own, to lose it alone
	list, err := bounce.OpenSuppressionList(ctx, bounce.SuppressionOptions{JetStream: sq.JetStream()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := list.Add(ctx, bounce.Suppression{Addr: "gone@one.test"}, bounce.ActorIntake); err != nil {
		t.Fatal(err)
	}
	metrics := admin.NewMetrics()
	h := start(t, testConfig(t), harnessOpts{suppressor: list, observer: metrics})
	c := h.login(lnImplicit, appUser, appPass)
	c.expect("MAIL FROM:<a@example.com>", 250, "")
	c.expect("RCPT TO:<gone@one.test>", 550, "5.1.1")
	sq.Embedded().Shutdown()
	sq.Embedded().WaitForShutdown()

	for _, rcpt := range []string{"gone@one.test", "x@two.test"} {
		start := time.Now()
		c.expect("RCPT TO:<"+rcpt+">", 250, "")
		t.Logf("RCPT %s with the list unreadable answered after %s", rcpt, time.Since(start))
	}
	c.expect("DATA", 354, "")
	c.send(message("a@example.com", "") + ".\r\n")
	r := c.read()
	if r.Code != 250 {
		t.Fatalf("end of DATA: %v", r)
	}
	id := strings.TrimPrefix(r.Text, "OK: queued as ")
	entries := h.lease(2)
	if entries[id+"/one.test"] == nil || entries[id+"/two.test"] == nil {
		t.Fatalf("accepted message not stored for both domains: %v", entries)
	}
	if ev := h.logs.events("policy_read_failed"); len(ev) != 1 || ev[0]["read"] != "suppression" {
		t.Fatalf("policy_read_failed lines: %v, want one (rate-limited) for the suppression read", ev)
	}
	if n := policyReadFailures(t, metrics, "suppression"); n != 2 {
		t.Fatalf("jetrelay_policy_read_failures_total{read=suppression} = %v, want 2", n)
	}
}

// policyReadFailures reads the failed-open counter for read.
func policyReadFailures(t *testing.T, m *admin.Metrics, read string) float64 {
	t.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "jetrelay_policy_read_failures_total" {
			continue
		}
		for _, mm := range mf.GetMetric() {
			for _, l := range mm.GetLabel() {
				if l.GetName() == "read" && l.GetValue() == read {
					return mm.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no jetrelay_policy_read_failures_total{read=%q}", read)
	return 0
}

// TestReadFailuresPauseAndLogRate: a failed read pauses the reads for
// policyReadPause (a skipped one does not extend it), and one line per
// policyReadLogEvery is logged, carrying the count of those not logged.
func TestReadFailuresPauseAndLogRate(t *testing.T) {
	t.Parallel()
	var f readFailures
	t0 := time.Date(2026, 12, 7, 3, 0, 0, 0, time.UTC)
	if f.paused(t0) {
		t.Fatal("paused before any failure")
	}
	steps := []struct {
		at            time.Duration
		read          bool
		logIt         bool
		unlogged      int
		pausedJustNow bool // paused at the same instant, after the step
	}{
		{at: 0, read: true, logIt: true, pausedJustNow: true},
		{at: time.Second, read: false, pausedJustNow: true},
		{at: policyReadPause, read: false, pausedJustNow: false},
		{at: policyReadPause + time.Second, read: true, pausedJustNow: true},
		{at: policyReadLogEvery, read: true, logIt: true, unlogged: 3, pausedJustNow: true},
		{at: policyReadLogEvery + policyReadPause, read: false, pausedJustNow: false},
	}
	for i, s := range steps {
		now := t0.Add(s.at)
		logIt, unlogged := f.failed(now, s.read)
		if logIt != s.logIt || unlogged != s.unlogged {
			t.Errorf("step %d: failed() = %v, %d; want %v, %d", i, logIt, unlogged, s.logIt, s.unlogged)
		}
		if got := f.paused(now); got != s.pausedJustNow {
			t.Errorf("step %d: paused = %v, want %v", i, got, s.pausedJustNow)
		}
	}
}
