package deliver_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/relaytest"
)

// A 451 is retried on the schedule (1s here) and delivered the second time.
func TestTempfailThenSuccess(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	m := h.mx()
	h.domain("retry.test", m.IP)
	m.ReplyRcpt("x@retry.test", relaytest.Err(451, "4.3.0", "try later"), 1)
	h.start(h.config())
	arrival := time.Now().Add(-time.Minute)
	h.send([]string{"x@retry.test"}, func(e *queue.Envelope) { e.Arrival, e.User = arrival, "shop" })
	relaytest.Eventually(h.t, "delivered on retry", func() bool {
		return m.Received("x@retry.test") == 1 && len(h.deliveries("x@retry.test", events.StatusDelivered)) == 1
	})
	def := h.deliveries("x@retry.test", events.StatusDeferred)
	del := h.deliveries("x@retry.test", events.StatusDelivered)
	if len(def) != 1 || len(del) != 1 || def[0].SMTPCode != 451 || def[0].Reply != "try later" || del[0].Attempt != 2 {
		t.Fatalf("events: deferred %v delivered %v", def, del)
	}
	if def[0].User != "shop" || del[0].User != "shop" { // relay/stats counts per user
		t.Fatalf("user %q / %q, want shop", def[0].User, del[0].User)
	}
	// The latency histogram's input: the original arrival on every attempt.
	if !def[0].Arrival.Equal(arrival) || !del[0].Arrival.Equal(arrival) {
		t.Fatalf("arrival %v / %v, want %v", def[0].Arrival, del[0].Arrival, arrival)
	}
	if def[0].NextAttempt == nil {
		t.Fatal("deferred event without next_attempt")
	}
	if d := def[0].NextAttempt.Sub(def[0].Time); d < 0 || d > 2*time.Second {
		t.Fatalf("next attempt %s after the failure; schedule is 1s", d)
	}
	relaytest.Eventually(h.t, "queue empty", func() bool {
		return h.queued(queue.SubjReady)+h.queued(queue.SubjScheduled) == 0
	})
}

// One transaction, three recipients: 250 is delivered once, 451 is retried
// (alone) and delivered later, 550 is failed and reported once.
func TestMixedRecipientResults(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	m := h.mx()
	h.domain("mixed.test", m.IP)
	m.ReplyRcpt("later@mixed.test", relaytest.Err(451, "4.2.1", "mailbox busy\nplease retry"), 1)
	m.ReplyRcpt("bad@mixed.test", relaytest.Err(550, "5.1.1", "no such user"), -1)
	h.start(h.config())
	h.send([]string{"ok@mixed.test", "later@mixed.test", "bad@mixed.test"})
	relaytest.Eventually(h.t, "retried recipient delivered", func() bool { return m.Received("later@mixed.test") == 1 })
	relaytest.Eventually(h.t, "queue empty", func() bool {
		return h.queued(queue.SubjReady)+h.queued(queue.SubjScheduled) == 0
	})
	if n := m.Received("ok@mixed.test"); n != 1 {
		t.Fatalf("accepted recipient delivered %d times", n)
	}
	msgs := m.Messages()
	if len(msgs) != 2 || len(msgs[0].Rcpts) != 1 || len(msgs[1].Rcpts) != 1 || msgs[1].Rcpts[0] != "later@mixed.test" {
		t.Fatalf("transactions %+v", msgs)
	}
	f := h.rep.failures("bad@mixed.test")
	if len(f) != 1 || f[0].Code != 550 || f[0].Enh != "5.1.1" || f[0].Text != "no such user" {
		t.Fatalf("failures %+v", f)
	}
	ev := h.deliveries("later@mixed.test", events.StatusDeferred)
	if len(ev) != 1 || ev[0].Reply != "mailbox busy\nplease retry" || ev[0].SMTPEnh != "4.2.1" {
		t.Fatalf("multiline reply not kept whole: %q", ev[0].Reply)
	}
	if len(h.deliveries("bad@mixed.test", "")) != 1 || len(h.rep.failures("ok@mixed.test")) != 0 {
		t.Fatal("the failed recipient was tried again, or the good one reported")
	}
}

// A connection dropped in the middle of DATA is retried; the message is
// neither lost nor delivered twice.
func TestDroppedMidData(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	m := h.mx()
	h.domain("drop.test", m.IP)
	m.DropData(1)
	h.start(h.config())
	h.send([]string{"x@drop.test"})
	relaytest.Eventually(h.t, "delivered after the drop", func() bool {
		return m.Received("x@drop.test") == 1 && len(h.deliveries("x@drop.test", events.StatusDelivered)) == 1
	})
	if ev := h.deliveries("x@drop.test", events.StatusDeferred); len(ev) != 1 || ev[0].SMTPEnh != "4.4.2" {
		t.Fatalf("deferred events %v", ev)
	}
	relaytest.Eventually(h.t, "queue empty", func() bool {
		return h.queued(queue.SubjReady)+h.queued(queue.SubjScheduled) == 0
	})
	if m.Received("x@drop.test") != 1 {
		t.Fatal("delivered twice")
	}
}

// N entries to one domain travel over fewer than N connections.
func TestConnectionReuse(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	m := h.mx()
	h.domain("reuse.test", m.IP)
	const n = 30
	for i := 0; i < n; i++ {
		h.send([]string{"r" + string(rune('a'+i%26)) + "@reuse.test"})
	}
	cfg := h.config()
	cfg.Delivery.MaxPerDestination = 2
	h.start(cfg)
	relaytest.Eventually(h.t, "all delivered", func() bool { return len(m.Messages()) == n })
	if c := m.Connections(); c >= n || c > 4 {
		t.Fatalf("%d entries over %d connections", n, c)
	}
}

// Extensions: DSN parameters pass on when offered; NOTIFY=SUCCESS to a
// server without DSN is reported "relayed"; an 8-bit body to a server
// without 8BITMIME arrives as quoted-printable; SMTPUTF8 to a server
// without it fails 5.6.7.
func TestExtensions(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	dsn := h.mx(relaytest.DSN())
	plain := h.mx(relaytest.No8BitMIME())
	h.domain("dsn.test", dsn.IP)
	h.domain("plain.test", plain.IP)
	h.start(h.config())
	notify := func(e *queue.Envelope) {
		e.Rcpts[0].Notify = []string{"SUCCESS", "FAILURE"}
		e.Rcpts[0].ORCPT = "rfc822;orig@dsn.test"
		e.Ret, e.EnvID = "HDRS", "env-1"
	}
	h.send([]string{"x@dsn.test"}, notify)
	h.send([]string{"x@plain.test"}, notify)
	body8 := []byte("From: a@sender.test\r\nSubject: caf\xc3\xa9?\r\n\r\ncaf\xc3\xa9\r\n")
	body8[len("From: a@sender.test\r\nSubject: caf")] = 'e' // 8-bit body, 7-bit header
	body8[len("From: a@sender.test\r\nSubject: cafe")] = '!'
	h.sendBody([]string{"y@plain.test"}, body8, func(e *queue.Envelope) { e.Body8Bit = true })
	h.send([]string{"u@plain.test"}, func(e *queue.Envelope) { e.SMTPUTF8 = true })

	// The MX has a message before the engine has its reply: wait for the
	// reports too (relayed is made after the reply, on the finisher).
	relaytest.Eventually(h.t, "all settled", func() bool {
		h.rep.mu.Lock()
		reported := len(h.rep.relayed) > 0
		h.rep.mu.Unlock()
		return dsn.Received("x@dsn.test") == 1 && plain.Received("x@plain.test") == 1 &&
			plain.Received("y@plain.test") == 1 && len(h.rep.failures("u@plain.test")) == 1 && reported
	})
	got := dsn.Messages()[0]
	ro := got.RcptOpts["x@dsn.test"]
	if len(ro.Notify) != 2 || ro.OriginalRecipient != "orig@dsn.test" ||
		got.MailOpts.EnvelopeID != "env-1" || got.MailOpts.Return != "HDRS" {
		t.Fatalf("DSN parameters not passed on: %+v %+v", got.MailOpts, ro)
	}
	h.rep.mu.Lock()
	relayed := h.rep.relayed
	h.rep.mu.Unlock()
	if len(relayed) != 1 || relayed[0].Rcpt.Addr != "x@plain.test" {
		t.Fatalf("relayed %+v", relayed)
	}
	for _, msg := range plain.Messages() {
		if msg.Rcpts[0] == "y@plain.test" {
			if bytes.ContainsFunc(msg.Body, func(r rune) bool { return r >= 0x80 }) ||
				!strings.Contains(string(msg.Body), "Content-Transfer-Encoding: quoted-printable") ||
				!strings.Contains(string(msg.Body), "caf=C3=A9") {
				t.Fatalf("8-bit body sent as is:\n%s", msg.Body)
			}
		}
	}
	if f := h.rep.failures("u@plain.test")[0]; f.Enh != "5.6.7" || f.Temporary {
		t.Fatalf("SMTPUTF8 result %+v", f)
	}
}

// After retry.max_age a recipient that keeps getting 4xx fails for good,
// reported with its last temporary reply.
func TestMaxAgeExpiry(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	m := h.mx()
	h.domain("expire.test", m.IP)
	m.ReplyRcpt("x@expire.test", relaytest.Err(452, "4.2.2", "mailbox full"), -1)
	cfg := h.config()
	cfg.Delivery.Retry.MaxAge = config.Duration(2 * time.Second)
	h.start(cfg)
	h.send([]string{"x@expire.test"})
	relaytest.Eventually(h.t, "expired and reported", func() bool { return len(h.rep.failures("x@expire.test")) == 1 })
	f := h.rep.failures("x@expire.test")[0]
	if string(f.Status) != events.StatusFailed || !f.Temporary || f.Enh != "4.2.2" || f.Text != "mailbox full" {
		t.Fatalf("expiry result %+v", f)
	}
	if len(h.deliveries("x@expire.test", events.StatusDeferred)) < 1 {
		t.Fatal("failed without being retried first")
	}
	relaytest.Eventually(h.t, "queue empty", func() bool {
		return h.queued(queue.SubjReady)+h.queued(queue.SubjScheduled) == 0
	})
}
