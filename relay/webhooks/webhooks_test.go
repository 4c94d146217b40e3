package webhooks_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/webhooks"
	"github.com/prometheus/client_golang/prometheus"
)

const wait = 60 * time.Second

// Two nodes run the same webhook: every event is POSTed once, signed, in
// batches of at most batch.max, each message's events in order, with the
// fields the issue names; an accepted event and another user's mail are
// not sent.
func TestSignedBatchesOncePerClusterInOrder(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	reg := prometheus.NewRegistry()
	h := e.hook("app")
	h.Users = []string{"shop"}
	m1, _ := e.manager(reg)
	m2, _ := e.manager(nil)
	m1.Apply([]webhooks.Hook{h})
	m2.Apply([]webhooks.Hook{h})
	queuetest.Eventually(t, wait, "the consumer", func() bool {
		_, err := webhooks.Pending(context.Background(), e.js, "app")
		return err == nil
	})
	e.publishMessages(8, "shop")
	e.publishMessages(2, "other")
	queuetest.Eventually(t, wait, "24 events accepted", func() bool { return e.rc.distinct() >= 24 })
	all, batches := e.rc.accepted()
	if len(all) != 24 {
		t.Fatalf("%d events POSTed, want 24 (each once)", len(all))
	}
	for _, b := range batches {
		if len(b) > h.BatchMax {
			t.Fatalf("batch of %d events, max %d", len(b), h.BatchMax)
		}
	}
	checkOrder(t, all)
	for _, p := range all {
		if p.User != "shop" || p.Meta["order"] != p.QueueID || p.Tag != "welcome" || p.MessageID == "" ||
			p.Rcpt != "rcpt@example.org" || p.MX != "mx.example.org" || p.TLS != "TLSv1.3" || p.SMTPCode == 0 {
			t.Fatalf("payload lacks fields: %+v", p)
		}
		if _, err := time.Parse(time.RFC3339, p.Time); err != nil {
			t.Fatalf("time %q: %v", p.Time, err)
		}
		want := map[int]string{1: "deferred", 2: "deferred", 3: "delivered"}[p.Attempt]
		if p.Event != want || p.Status != want {
			t.Fatalf("attempt %d: event %q status %q, want %q", p.Attempt, p.Event, p.Status, want)
		}
	}
	if _, bad := e.rc.counts(); bad != 0 {
		t.Fatalf("%d POSTs with a bad signature", bad)
	}
	queuetest.Eventually(t, wait, "nothing pending", func() bool {
		n, err := webhooks.Pending(context.Background(), e.js, "app")
		return err == nil && n == 0
	})
	st, err := webhooks.ReadStatus(context.Background(), e.js, "app")
	if err != nil || st.LastSuccess == nil || st.LastError != "" {
		t.Fatalf("status %+v, %v", st, err)
	}
}

// 500s and a POST that times out are retried with the same events first;
// the failures are counted and the status shows the last error, then the
// success.
func TestRetryAfter500AndTimeout(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.rc.setReply(func(n int, r *http.Request) int {
		switch n {
		case 1, 2:
			return http.StatusInternalServerError
		case 3:
			<-r.Context().Done() // no answer: the client's timeout ends it
		}
		return 0
	})
	reg := prometheus.NewRegistry()
	h := e.hook("app")
	h.Timeout = time.Second
	m, _ := e.manager(reg)
	m.Apply([]webhooks.Hook{h})
	queuetest.Eventually(t, wait, "the consumer", func() bool {
		_, err := webhooks.Pending(context.Background(), e.js, "app")
		return err == nil
	})
	e.publishMessages(4, "shop")
	queuetest.Eventually(t, wait, "12 events accepted", func() bool { return e.rc.distinct() >= 12 })
	all, _ := e.rc.accepted()
	if len(all) != 12 {
		t.Fatalf("%d events accepted, want 12", len(all))
	}
	checkOrder(t, all)
	if posts, _ := e.rc.counts(); posts < 4 {
		t.Fatalf("%d POSTs, want the 3 failures and a success at least", posts)
	}
	if got := metric(t, reg, "jetrelay_webhook_posts_failed_total", "app"); got != 3 {
		t.Fatalf("failed POSTs counted %v, want 3", got)
	}
	// The receiver has the events before the sender has its answer and
	// counts them: wait for the count, then check it is not more.
	queuetest.Eventually(t, wait, "12 events counted as sent", func() bool {
		return metric(t, reg, "jetrelay_webhook_events_sent_total", "app") >= 12
	})
	if got := metric(t, reg, "jetrelay_webhook_events_sent_total", "app"); got != 12 {
		t.Fatalf("sent counted %v, want 12", got)
	}
	queuetest.Eventually(t, wait, "the status to record the success after the errors", func() bool {
		st, err := webhooks.ReadStatus(context.Background(), e.js, "app")
		return err == nil && st.LastSuccess != nil && st.LastErrorAt != nil && st.Failing == 0 &&
			st.LastSuccess.After(*st.LastErrorAt) && st.LastError != ""
	})
}

// An endpoint that keeps failing: events older than retry.max_age are
// dropped (counted, acked) and the webhook goes on.
func TestDroppedAfterMaxAge(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.rc.setReply(func(int, *http.Request) int { return http.StatusBadGateway })
	reg := prometheus.NewRegistry()
	h := e.hook("app")
	h.MaxAge = time.Second
	m, _ := e.manager(reg)
	m.Apply([]webhooks.Hook{h})
	queuetest.Eventually(t, wait, "the consumer", func() bool {
		_, err := webhooks.Pending(context.Background(), e.js, "app")
		return err == nil
	})
	e.publishMessages(2, "shop")
	queuetest.Eventually(t, wait, "6 events dropped", func() bool {
		return metric(t, reg, "jetrelay_webhook_events_dropped_total", "app") == 6
	})
	queuetest.Eventually(t, wait, "nothing pending", func() bool {
		n, err := webhooks.Pending(context.Background(), e.js, "app")
		return err == nil && n == 0
	})
	if n := e.rc.distinct(); n != 0 {
		t.Fatalf("%d events accepted by an endpoint that only failed", n)
	}
}

// A node dies while its POST is in flight (never acked): the batch is
// sent again by the next sender, with the same event ids, before newer
// events.
func TestAtLeastOnceAcrossRestartMidBatch(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	inFlight := make(chan struct{})
	e.rc.setReply(func(n int, r *http.Request) int {
		if n == 1 {
			close(inFlight)
			<-r.Context().Done()
		}
		return 0
	})
	h := e.hook("app")
	m1, nc1 := e.manager(nil)
	m1.Apply([]webhooks.Hook{h})
	queuetest.Eventually(t, wait, "the consumer", func() bool {
		_, err := webhooks.Pending(context.Background(), e.js, "app")
		return err == nil
	})
	e.publishMessages(3, "shop")
	select {
	case <-inFlight:
	case <-time.After(wait):
		t.Fatal("no POST")
	}
	nc1.Close() // the node is gone: no ack, no nak, no unpin
	m1.Close()
	m2, _ := e.manager(nil)
	m2.Apply([]webhooks.Hook{h})
	e.publishMessages(1, "late")
	queuetest.Eventually(t, wait, "12 events accepted", func() bool { return e.rc.distinct() >= 12 })
	all, _ := e.rc.accepted()
	checkOrder(t, all)
}

// Replay POSTs the stored events again with their event ids.
func TestReplay(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h := e.hook("app")
	m, _ := e.manager(nil)
	m.Apply([]webhooks.Hook{h})
	queuetest.Eventually(t, wait, "the consumer", func() bool {
		_, err := webhooks.Pending(context.Background(), e.js, "app")
		return err == nil
	})
	e.publishMessages(3, "shop")
	queuetest.Eventually(t, wait, "9 events accepted", func() bool { return e.rc.distinct() >= 9 })
	first, _ := e.rc.accepted()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	n, err := webhooks.Replay(ctx, webhooks.ReplayOptions{JetStream: e.js, Hook: h, Since: time.Now().Add(-time.Hour)})
	if err != nil || n != 9 {
		t.Fatalf("replay sent %d, %v; want 9", n, err)
	}
	all, _ := e.rc.accepted()
	if len(all) != 18 || e.rc.distinct() != 9 {
		t.Fatalf("after replay %d events, %d distinct; want 18 and 9", len(all), e.rc.distinct())
	}
	for i, p := range all[9:] {
		if p.EventID != first[i].EventID {
			t.Fatalf("replayed event %d has id %s, first sent as %s", i, p.EventID, first[i].EventID)
		}
	}
}

// Apply removes a webhook (its consumer goes) and adds another; the test
// event is signed.
func TestApplyAndTestEvent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m, _ := e.manager(nil)
	m.Apply([]webhooks.Hook{e.hook("a")})
	queuetest.Eventually(t, wait, "consumer a", func() bool {
		_, err := webhooks.Pending(context.Background(), e.js, "a")
		return err == nil
	})
	m.Apply([]webhooks.Hook{e.hook("b")})
	queuetest.Eventually(t, wait, "consumer a deleted, b created", func() bool {
		_, errA := webhooks.Pending(context.Background(), e.js, "a")
		_, errB := webhooks.Pending(context.Background(), e.js, "b")
		return errors.Is(errA, webhooks.ErrNoConsumer) && errB == nil
	})
	if got := m.Names(); len(got) != 1 || got[0] != "b" {
		t.Fatalf("running %v, want [b]", got)
	}
	if err := webhooks.Test(context.Background(), nil, e.hook("b")); err != nil {
		t.Fatal(err)
	}
	all, _ := e.rc.accepted()
	if len(all) != 1 || all[0].Event != webhooks.TypeTest {
		t.Fatalf("test POST: %+v", all)
	}
	e.rc.setReply(func(int, *http.Request) int { return http.StatusTeapot })
	var se *webhooks.StatusError
	if err := webhooks.Test(context.Background(), nil, e.hook("b")); !errors.As(err, &se) || se.Code != 418 {
		t.Fatalf("test against a 418: %v", err)
	}
}

// Event kinds map to the webhook types; the rest are not sent.
func TestTypeOf(t *testing.T) {
	cases := []struct {
		e    events.Event
		want string
	}{
		{events.Event{Event: events.Delivery, Status: events.StatusDelivered}, webhooks.TypeDelivered},
		{events.Event{Event: events.Delivery, Status: events.StatusDeferred}, webhooks.TypeDeferred},
		{events.Event{Event: events.Delivery, Status: events.StatusFailed}, webhooks.TypeFailed},
		{events.Event{Event: events.Bounced}, webhooks.TypeBounced},
		{events.Event{Event: events.DSN, Status: "queued", Reason: "delayed"}, webhooks.TypeDelayNotice},
		{events.Event{Event: events.DSN, Status: "queued", Reason: "failed"}, ""},
		{events.Event{Event: events.Suppressed}, webhooks.TypeSuppressed},
		{events.Event{Event: events.Complaint}, webhooks.TypeComplaint},
		{events.Event{Event: events.Paused}, webhooks.TypePaused},
		{events.Event{Event: events.BounceRateWarning}, webhooks.TypeBounceRateWarning},
		{events.Event{Event: events.Accepted}, ""},
		{events.Event{Event: events.Resumed}, ""},
	}
	for _, c := range cases {
		if got := webhooks.TypeOf(&c.e); got != c.want {
			t.Errorf("%s/%s/%s: %q, want %q", c.e.Event, c.e.Status, c.e.Reason, got, c.want)
		}
	}
	if got := webhooks.FilterSubjects([]string{"delivered", "failed", "delay_notice"}); len(got) != 2 ||
		got[0] != "jr.ev.delivery.>" || got[1] != "jr.ev.dsn.>" {
		t.Fatalf("filter subjects %v", got)
	}
}

// A signature verifies only for its body and secret.
func TestSignVerify(t *testing.T) {
	body := []byte(`[{"event":"delivered"}]`)
	h := webhooks.Sign(secret, time.Unix(1700000000, 0), body)
	if h[:13] != "t=1700000000," || !webhooks.Verify(secret, h, body) {
		t.Fatalf("header %q does not verify", h)
	}
	if webhooks.Verify(secret, h, append(body, ' ')) || webhooks.Verify([]byte("other"), h, body) ||
		webhooks.Verify(secret, "t=x,v1=00", body) {
		t.Fatal("a wrong body, secret or header verified")
	}
}

// A dead endpoint (it never answers) holds up only its own webhook.
func TestDeadEndpointDelaysNothingElse(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dead := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body) // then the server notices the client leaving
		<-r.Context().Done()
	}))
	t.Cleanup(dead.Close)
	stuck := e.hook("dead")
	stuck.URL, stuck.Timeout = dead.URL, time.Minute
	m, _ := e.manager(nil)
	m.Apply([]webhooks.Hook{stuck, e.hook("live")})
	queuetest.Eventually(t, wait, "both consumers", func() bool {
		_, err1 := webhooks.Pending(context.Background(), e.js, "dead")
		_, err2 := webhooks.Pending(context.Background(), e.js, "live")
		return err1 == nil && err2 == nil
	})
	e.publishMessages(5, "shop")
	queuetest.Eventually(t, wait, "15 events at the live endpoint", func() bool { return e.rc.distinct() >= 15 })
	n, err := webhooks.Pending(context.Background(), e.js, "dead")
	if err != nil || n != 15 {
		t.Fatalf("dead webhook pending %d, %v; want all 15", n, err)
	}
}

// Two nodes, and an endpoint failing for longer than the pin's TTL and
// the ack wait: the retrying sender keeps its batch and its pin, so the
// other node POSTs nothing meanwhile (though the batch leaves room under
// MaxAckPending for newer events), and no event arrives twice.
func TestRetryingSenderKeepsBatchAndPin(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const failures = 40 // at 20ms..200ms backoff: well past the 4s pin TTL and 2s ack wait
	e.rc.setReply(func(n int, _ *http.Request) int {
		if n <= failures {
			return http.StatusServiceUnavailable
		}
		return 0
	})
	h := e.hook("app")
	m1, _ := e.manager(nil)
	m2, _ := e.manager(nil)
	m1.Apply([]webhooks.Hook{h})
	m2.Apply([]webhooks.Hook{h})
	queuetest.Eventually(t, wait, "the consumer", func() bool {
		_, err := webhooks.Pending(context.Background(), e.js, "app")
		return err == nil
	})
	e.publishMessages(3, "first") // 9 events: a batch of 10 with room for one more
	queuetest.Eventually(t, wait, "a failed POST", func() bool { n, _ := e.rc.counts(); return n >= 1 })
	e.publishMessages(3, "later")
	queuetest.Eventually(t, wait, "18 events accepted", func() bool { return e.rc.distinct() >= 18 })
	all, _ := e.rc.accepted()
	if len(all) != 18 {
		t.Fatalf("%d events accepted for 18 distinct: a batch was sent twice", len(all))
	}
	checkOrder(t, all)
	e.rc.mu.Lock()
	defer e.rc.mu.Unlock()
	for i, id := range e.rc.first[:failures] {
		if id != e.rc.first[0] {
			t.Fatalf("POST %d carried another batch (first event %s, not %s) while the first was retried",
				i+1, id, e.rc.first[0])
		}
	}
}

// A clean stop hands the batch in flight back and releases the pin: the
// other node sends it at once, long before the ack wait (1m) or the pin's
// TTL (2m) would let it.
func TestCleanStopHandsOver(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	inFlight := make(chan struct{})
	e.rc.setReply(func(n int, r *http.Request) int {
		if n == 1 {
			close(inFlight)
			<-r.Context().Done()
		}
		return 0
	})
	h := e.hook("app")
	m1, _ := e.managerWith(nil, time.Minute, 2*time.Minute)
	m2, _ := e.managerWith(nil, time.Minute, 2*time.Minute)
	m1.Apply([]webhooks.Hook{h})
	queuetest.Eventually(t, wait, "the consumer", func() bool {
		_, err := webhooks.Pending(context.Background(), e.js, "app")
		return err == nil
	})
	e.publishMessages(2, "shop")
	select {
	case <-inFlight:
	case <-time.After(wait):
		t.Fatal("no POST")
	}
	m2.Apply([]webhooks.Hook{h})
	m1.Close()
	queuetest.Eventually(t, 30*time.Second, "6 events accepted from the other node", func() bool {
		return e.rc.distinct() >= 6
	})
	all, _ := e.rc.accepted()
	checkOrder(t, all)
}
