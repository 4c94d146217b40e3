package submit

import (
	"context"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue"
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
		pause         time.Duration
		logIt         bool
		unlogged      int
		pausedJustNow bool // paused at the same instant, after the step
	}{
		{at: 0, pause: policyReadPause, logIt: true, pausedJustNow: true},
		{at: time.Second, pausedJustNow: true},
		{at: policyReadPause, pausedJustNow: false},
		{at: policyReadPause + time.Second, pause: policyReadPause, pausedJustNow: true},
		{at: policyReadLogEvery, pause: policyReadPause, logIt: true, unlogged: 3, pausedJustNow: true},
		{at: policyReadLogEvery + policyReadPause, pausedJustNow: false},
	}
	for i, s := range steps {
		now := t0.Add(s.at)
		logIt, unlogged := f.failed(now, s.pause)
		if logIt != s.logIt || unlogged != s.unlogged {
			t.Errorf("step %d: failed() = %v, %d; want %v, %d", i, logIt, unlogged, s.logIt, s.unlogged)
		}
		if got := f.paused(now); got != s.pausedJustNow {
			t.Errorf("step %d: paused = %v, want %v", i, got, s.pausedJustNow)
		}
	}
}

// sent is one message sent by sendLoop: the reply to its final dot.
type sent struct {
	reply smtpReply
	at    time.Time // when the final dot was sent
	took  time.Duration
}

// sendLoop sends one small message after another on c until stop is
// closed, reporting each reply to the final dot; it stops on a protocol
// error (reported on the test).
func sendLoop(t *testing.T, c *rawClient, stop <-chan struct{}, out chan<- sent) {
	step := func(line string, code int) bool {
		if _, err := io.WriteString(c.conn, line+"\r\n"); err != nil {
			t.Errorf("write %q: %v", line, err)
			return false
		}
		r, err := c.readErr()
		if err != nil || r.Code != code {
			t.Errorf("%q: %v, %v; want %d", line, r, err, code)
			return false
		}
		return true
	}
	for {
		select {
		case <-stop:
			return
		default:
		}
		if !step("MAIL FROM:<a@example.com>", 250) || !step("RCPT TO:<x@one.test>", 250) || !step("DATA", 354) {
			return
		}
		at := time.Now()
		if _, err := io.WriteString(c.conn, message("a@example.com", "")+".\r\n"); err != nil {
			t.Errorf("write message: %v", err)
			return
		}
		r, err := c.readErr()
		if err != nil {
			t.Errorf("reply to the final dot: %v", err)
			return
		}
		out <- sent{reply: r, at: at, took: time.Since(at)}
	}
}

// TestSubmitWhileStreamLeaderLost: submission on a node of a three-node
// cluster (queue stream, suppression list at R3) while the queue stream's
// leader is shut down: every final dot is answered 250 or 451 4.3.0 — never
// 5xx — within the store deadline, RCPT never fails, every 250 is stored
// once, nothing is stored twice, and 250s come back.
func TestSubmitWhileStreamLeaderLost(t *testing.T) {
	t.Parallel()
	c := queuetest.StartCluster(t)
	log := testLogger(t)
	setup := queuetest.OpenQueue(t, c.Nodes[0].ClientURL(), 3, log, queue.PublishOptions{})
	leader := queuetest.StreamInfo(t, setup, "").Cluster.Leader
	via := c.Nodes[0]
	if via.Name() == leader {
		via = c.Nodes[1]
	}
	q := queuetest.OpenQueue(t, via.ClientURL(), 3, log, queue.PublishOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	list, err := bounce.OpenSuppressionList(ctx, bounce.SuppressionOptions{JetStream: q.JetStream(), Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	h := start(t, testConfig(t), harnessOpts{queue: q, suppressor: list})
	const clients = 2
	out := make(chan sent, 256)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range clients {
		cl := h.login(lnImplicit, appUser, appPass)
		wg.Add(1)
		go func() { defer wg.Done(); sendLoop(t, cl, stop, out) }()
	}
	var all []sent
	wait := func(what string, n int, since time.Time) {
		t.Helper()
		deadline := time.After(2 * testTimeout)
		for count250(all, since) < n {
			select {
			case s := <-out:
				all = append(all, s)
			case <-deadline:
				t.Fatalf("timed out waiting for %s (%d replies)", what, len(all))
			}
		}
	}
	wait("250s before the leader dies", 10, time.Time{})
	killed := time.Now()
	c.Node(leader).Shutdown()
	wait("250s after the leader died", 10, killed)
	close(stop)
	go func() { wg.Wait(); close(out) }()
	for s := range out {
		all = append(all, s)
	}
	checkSubmitted(t, q, all, killed)
}

// count250 counts the 250 replies to final dots sent after since.
func count250(all []sent, since time.Time) int {
	n := 0
	for _, s := range all {
		if s.reply.Code == 250 && s.at.After(since) {
			n++
		}
	}
	return n
}

// checkSubmitted checks the replies of TestSubmitWhileStreamLeaderLost
// against the queue stream.
func checkSubmitted(t *testing.T, q *queue.Queue, all []sent, killed time.Time) {
	t.Helper()
	counts := queuetest.StreamInfo(t, q, "jr.>").State.Subjects
	refused, back := 0, time.Duration(-1)
	for _, s := range all {
		if s.took > storeTimeout+testTimeout/2 { // a bound, not a speed target
			t.Errorf("reply %v took %s", s.reply, s.took)
		}
		switch {
		case s.reply.Code == 250:
			id := strings.TrimPrefix(s.reply.Text, "OK: queued as ")
			if n := counts[queue.Subject(queue.SubjReady, id, "one.test")]; n != 1 {
				t.Errorf("accepted %s stored %d times", id, n)
			}
			if d := s.at.Add(s.took).Sub(killed); s.at.After(killed) && (back < 0 || d < back) {
				back = d
			}
		case s.reply.Code == 451 && s.reply.Enh == "4.3.0":
			refused++
		default:
			t.Errorf("reply to the final dot: %v, want 250 or 451 4.3.0", s.reply)
		}
	}
	for subj, n := range counts {
		if n > 1 {
			t.Errorf("%s stored %d times", subj, n)
		}
	}
	t.Logf("%d messages, %d answered 451 4.3.0; first 250 after the leader died %s after it", len(all), refused, back)
}
