package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/jetrelay/jetrelay/relay/admin"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/deliver"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/relaytest"
	"github.com/jetrelay/jetrelay/relay/smtpclient"
)

// leaseTwo leases the two oldest ready entries: the first is deferred for
// an hour, the second stays in flight. No pull request is left waiting.
func leaseTwo(t *testing.T, q *queue.Queue) {
	t.Helper()
	ctx := context.Background()
	es, err := q.Lease(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	next := func() *queue.Entry {
		ch := make(chan *queue.Entry, 1)
		go func() {
			e, err := es.Next()
			if err != nil {
				t.Error(err)
			}
			ch <- e
		}()
		select {
		case e := <-ch:
			return e
		case <-time.After(30 * time.Second):
			t.Fatal("no entry leased")
		}
		return nil
	}
	e := next()
	env := *e.Env
	env.Attempt, env.LastReply = 1, queue.Reply{Code: 451, Enh: "4.7.1", Text: "greylisted", MX: "mx.one.example"}
	if err := e.Defer(ctx, &env, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	next()
	es.Stop()
	s, _ := q.Stream(ctx)
	c, _ := s.Consumer(ctx, queue.ConsumerName)
	relaytest.Eventually(t, "no waiting pulls", func() bool {
		info, err := c.Info(ctx)
		return err == nil && info.NumWaiting == 0
	})
}

func lsItems(t *testing.T, o *opsEnv, args ...string) []*queue.Item {
	t.Helper()
	rc, out, errOut := runOps(t, queueMain, append([]string{"ls"}, o.args(append(args, "--json")...)...)...)
	if rc != 0 {
		t.Fatalf("ls rc %d: %s", rc, errOut)
	}
	var items []*queue.Item
	if err := json.Unmarshal([]byte(out), &items); err != nil {
		t.Fatalf("ls --json: %v\n%s", err, out)
	}
	return items
}

func lsItemsByID(t *testing.T, o *opsEnv, id string) []*queue.Item {
	t.Helper()
	items, err := o.q.List(context.Background(), queue.ListOptions{ID: id})
	if err != nil {
		t.Fatal(err)
	}
	return items
}

func TestQueueCLI(t *testing.T) {
	t.Parallel()
	o := newOpsEnv(t)
	dID := queuetest.EnqueueTo(t, o.q, "one.example")
	fID := queuetest.EnqueueTo(t, o.q, "one.example")
	leaseTwo(t, o.q)
	xID := queuetest.EnqueueTo(t, o.q, "one.example")
	rID := queuetest.EnqueueTo(t, o.q, "two.example")

	rc, out, errOut := runOps(t, queueMain, append([]string{"ls"}, o.args()...)...)
	if rc != 0 || !regexp.MustCompile(`one\.example\s+1\s+1\s+1\s+0`).MatchString(out) ||
		!regexp.MustCompile(`two\.example\s+1\s+0\s+0\s+0`).MatchString(out) {
		t.Fatalf("ls rc %d:\n%s%s", rc, out, errOut)
	}
	rc, out, _ = runOps(t, queueMain, append([]string{"list", "--domain", "one.example"}, o.args()...)...)
	if rc != 0 || !strings.Contains(out, dID) || !strings.Contains(out, "451 4.7.1 greylisted") ||
		!strings.Contains(out, "3 entries") {
		t.Fatalf("ls --domain rc %d:\n%s", rc, out)
	}
	rc, out, _ = runOps(t, queueMain, append([]string{"show", dID}, o.args()...)...)
	header := "Message header:\n  From: app@example.com\n  Subject: t\n"
	for _, want := range []string{"State:", "deferred", "Last reply:", header, "History:"} {
		if rc != 0 || !strings.Contains(out, want) {
			t.Fatalf("show lacks %q (rc %d):\n%s", want, rc, out)
		}
	}
	if strings.Contains(out, "Jr-Env") || strings.Contains(out, "Nats-") {
		t.Fatalf("show prints NATS storage headers:\n%s", out)
	}

	t.Run("retry", func(t *testing.T) {
		rc, out, errOut := runOps(t, queueMain, append([]string{"retry", dID}, o.args()...)...)
		if rc != 0 || !strings.Contains(out, "made due "+dID) {
			t.Fatalf("retry rc %d: %s %s", rc, out, errOut)
		}
		relaytest.Eventually(t, "retried entry ready", func() bool {
			items := lsItemsByID(t, o, dID)
			return len(items) == 1 && items[0].State == queue.StateReady && strings.HasPrefix(items[0].Subject, "jr.q.")
		})
	})
	t.Run("hold in flight is refused", func(t *testing.T) {
		rc, out, _ := runOps(t, queueMain, append([]string{"hold", fID}, o.args()...)...)
		if rc != 1 || !strings.Contains(out, "being delivered") {
			t.Fatalf("hold in-flight rc %d: %s", rc, out)
		}
	})
	t.Run("hold and release", func(t *testing.T) {
		rc, out, errOut := runOps(t, queueMain, append([]string{"hold", rID}, o.args()...)...)
		if rc != 0 || !strings.Contains(out, "held "+rID) {
			t.Fatalf("hold rc %d: %s %s", rc, out, errOut)
		}
		if items := lsItems(t, o, "--domain", "two.example"); len(items) != 1 || items[0].State != queue.StateHeld {
			t.Fatalf("after hold: %+v", items)
		}
		rc, out, _ = runOps(t, queueMain, append([]string{"release", "--domain", "two.example"}, o.args()...)...)
		if rc != 0 || !strings.Contains(out, "1 released") {
			t.Fatalf("release rc %d: %s", rc, out)
		}
		if items := lsItems(t, o, "--domain", "two.example"); len(items) != 1 || items[0].State != queue.StateReady {
			t.Fatalf("after release: %+v", items)
		}
	})
	t.Run("delete", func(t *testing.T) {
		if rc, _, _ := runOps(t, queueMain, append([]string{"delete", "--domain", "two.example"}, o.args()...)...); rc != 2 {
			t.Fatalf("bulk delete without --yes: rc %d", rc)
		}
		rc, out, errOut := runOps(t, queueMain, append([]string{"delete", rID, "--no-bounce"}, o.args()...)...)
		if rc != 0 || !strings.Contains(out, "deleted "+rID) {
			t.Fatalf("delete rc %d: %s %s", rc, out, errOut)
		}
		if len(lsItemsByID(t, o, rID)) != 0 {
			t.Fatal("entry still stored after delete")
		}
		rc, out, errOut = runOps(t, queueMain, append([]string{"delete", xID}, o.args()...)...)
		if rc != 0 {
			t.Fatalf("delete with DSN rc %d: %s %s", rc, out, errOut)
		}
		var dsn *queue.Item
		for _, it := range lsItems(t, o, "--domain", "example.com") {
			if it.Env.IsDSN && it.Env.Rcpts[0].Addr == "app@example.com" {
				dsn = it
			}
		}
		if dsn == nil {
			t.Fatal("no DSN queued to the sender")
		}
	})
	t.Run("history records operator actions", func(t *testing.T) {
		rc, out, _ := runOps(t, logsMain, o.args("--json", "--id", xID)...)
		var kinds []string
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			var e events.Event
			if json.Unmarshal([]byte(l), &e) == nil {
				kinds = append(kinds, e.Event)
				if e.Event == events.Deleted && !strings.HasPrefix(e.Actor, "cli:") {
					t.Errorf("deleted event actor %q", e.Actor)
				}
			}
		}
		if rc != 0 || strings.Join(kinds, ",") != "dsn,deleted" {
			t.Fatalf("history of deleted entry: rc %d kinds %v", rc, kinds)
		}
	})
}

// liveRelay runs the real delivery engine against o's queue, a fake DNS
// and a fake MX, with a one-hour retry schedule, events to the stream and
// to metrics, and the admin endpoint.
func liveRelay(t *testing.T, o *opsEnv) (*relaytest.MX, *events.Emitter, string) {
	t.Helper()
	zone := relaytest.NewZone()
	dnsAddr := relaytest.FakeDNS(t, zone)
	mx := relaytest.FakeMX(t)
	zone.AddMX("live.example", 10, "mx.live.example")
	zone.AddA("mx.live.example", mx.IP)
	cfg := relaytest.Config(t, dnsAddr, mx.Port)
	cfg.Delivery.Retry.Schedule = []config.Duration{config.Duration(time.Hour)}
	cfg.Delivery.Retry.MaxAge = config.Duration(48 * time.Hour) // enqueueTo backdates arrival by an hour
	m := admin.NewMetrics()
	srv, err := admin.New(admin.Options{Listen: "127.0.0.1:0", Metrics: m, Queue: o.q, SampleEvery: 20 * time.Millisecond,
		Logger: relaytest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	em := events.NewEmitter(relaytest.Logger(t), events.Tee(m, o.pub))
	res, err := smtpclient.NewResolver(smtpclient.DNSOptions{
		Servers: cfg.Delivery.DNS.Servers, Timeout: time.Second, LoopbackOnly: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	eng, err := deliver.New(deliver.Options{Settings: deliverSettings(cfg), Queue: o.q, Events: em,
		Logger: relaytest.Logger(t), Resolver: res, Dialer: &relaytest.LoopbackDialer{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- eng.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("delivery engine did not stop")
		}
	})
	return mx, em, "http://" + srv.Addr().String()
}

func metricValue(t *testing.T, base, series string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return -1
}

// A greylisted delivery is deferred for an hour; `queue retry` makes the
// running engine deliver it now; logs and metrics follow.
func TestQueueRetryAgainstLiveRelay(t *testing.T) {
	t.Parallel()
	o := newOpsEnv(t)
	mx, em, base := liveRelay(t, o)
	const rcpt = "u@live.example"
	mx.ReplyRcpt(rcpt, relaytest.Err(451, "4.7.1", "greylisted"), 1)
	id := queuetest.EnqueueTo(t, o.q, "live.example")
	// As submission does, the accepted event carries the arrival time
	// (enqueueTo's hour ago), and it is published after the enqueue: the
	// engine may publish its first attempt before it.
	em.Emit(&events.Event{Time: time.Now().Add(-time.Hour), Event: events.Accepted, QueueID: id,
		MailFrom: events.Str("app@example.com"), RcptCount: 1})

	relaytest.Eventually(t, "deferred entry", func() bool {
		items := lsItemsByID(t, o, id)
		return len(items) == 1 && items[0].State == queue.StateDeferred && items[0].Env.LastReply.Code == 451
	})
	relaytest.Eventually(t, "metrics: deferred delivery, depth", func() bool {
		return metricValue(t, base, `jetrelay_deliveries_total{class="4",status="deferred"}`) == 1 &&
			metricValue(t, base, `jetrelay_queue_depth{state="deferred"}`) == 1
	})
	rc, out, errOut := runOps(t, queueMain, append([]string{"retry", "--domain", "live.example"}, o.args()...)...)
	if rc != 0 || !strings.Contains(out, "1 made due") {
		t.Fatalf("retry rc %d: %s %s", rc, out, errOut)
	}
	relaytest.Eventually(t, "delivered after retry", func() bool { return mx.Received(rcpt) == 1 })
	relaytest.Eventually(t, "metrics: delivered, queue empty", func() bool {
		return metricValue(t, base, `jetrelay_deliveries_total{class="2",status="delivered"}`) == 1 &&
			metricValue(t, base, `jetrelay_queue_depth{state="deferred"}`) == 0 &&
			metricValue(t, base, "jetrelay_messages_accepted_total") == 1
	})
	var kinds []string
	relaytest.Eventually(t, "full history", func() bool {
		rc, out, _ := runOps(t, logsMain, o.args("--json", "--id", id)...)
		kinds = nil
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			var e events.Event
			if json.Unmarshal([]byte(l), &e) == nil {
				kinds = append(kinds, statusOf(&e))
			}
		}
		return rc == 0 && strings.Join(kinds, ",") == "accepted,deferred,retried,delivered"
	})
}

// queue show prints the message's own header section, decoded for display,
// from an inline body and from a chunked one, never the NATS headers.
func TestQueueShowMessageHeader(t *testing.T) {
	t.Parallel()
	o := newOpsEnv(t)
	hdr := "From: =?UTF-8?Q?J=C3=B6rg?= <j@example.com>\r\nTo: u@one.example\r\n" +
		"Subject: =?UTF-8?B?R3LDvMOfZQ==?=\r\n folded\r\nMessage-ID: <m1@example.com>\r\n" +
		"Date: Tue, 1 Jul 2025 10:00:00 +0000\r\nX-Evil: \x1b[2Jgone\r\n\r\n"
	want := []string{"From: Jörg <j@example.com>", "To: u@one.example", "Subject: Grüße folded",
		"Message-ID: <m1@example.com>", "Date: Tue, 1 Jul 2025 10:00:00 +0000", `X-Evil: \x1b[2Jgone`}
	enqueue := func(domains ...string) string {
		m := &queue.Message{Body: []byte(hdr + "Subject: not a header, the body\r\n")}
		for _, d := range domains {
			m.Entries = append(m.Entries, &queue.Envelope{From: "j@example.com", Domain: d, Arrival: time.Now(),
				Rcpts: []queue.Recipient{{Addr: "u@" + d}}})
		}
		if err := o.q.Enqueue(context.Background(), m); err != nil {
			t.Fatal(err)
		}
		return m.ID
	}
	ids := map[string]string{"inline": enqueue("one.example"), "chunked": enqueue("one.example", "two.example")}
	for name, id := range ids {
		t.Run(name, func(t *testing.T) {
			rc, out, errOut := runOps(t, queueMain, append([]string{"show", id}, o.args()...)...)
			if rc != 0 {
				t.Fatalf("show rc %d: %s", rc, errOut)
			}
			for _, w := range want {
				if !strings.Contains(out, "\n  "+w+"\n") {
					t.Errorf("show lacks %q:\n%s", w, out)
				}
			}
			for _, bad := range []string{"Jr-Env", "Nats-", "\x1b", "the body"} {
				if strings.Contains(out, bad) {
					t.Errorf("show prints %q:\n%s", bad, out)
				}
			}
			rc, out, errOut = runOps(t, queueMain, append([]string{"show", id, "--json"}, o.args()...)...)
			var got struct {
				Entries       []map[string]any     `json:"entries"`
				MessageHeader *queue.MessageHeader `json:"message_header"`
			}
			if err := json.Unmarshal([]byte(out), &got); rc != 0 || err != nil {
				t.Fatalf("show --json rc %d: %v %s\n%s", rc, err, errOut, out)
			}
			if got.MessageHeader == nil || len(got.MessageHeader.Fields) != len(want) ||
				got.MessageHeader.Fields[2] != (queue.HeaderField{Name: "Subject", Value: "Grüße folded"}) {
				t.Fatalf("message_header %+v", got.MessageHeader)
			}
			if _, ok := got.Entries[0]["headers"]; ok || strings.Contains(out, "Jr-Env") {
				t.Fatalf("--json still has the NATS headers:\n%s", out)
			}
		})
	}
}

// An entry deferred because traffic shaping made it wait says so in ls
// (table and JSON) and show.
func TestQueueLsWaiting(t *testing.T) {
	t.Parallel()
	o := newOpsEnv(t)
	id := queuetest.EnqueueTo(t, o.q, "gmail.example")
	ctx := context.Background()
	es, err := o.q.Lease(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	e, err := es.Next()
	if err != nil {
		t.Fatal(err)
	}
	env := *e.Env
	env.Waiting = "shaping: connections (google)"
	if err := e.Defer(ctx, &env, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	es.Stop()
	rc, out, errOut := runOps(t, queueMain, append([]string{"ls", "--domain", "gmail.example"}, o.args()...)...)
	if rc != 0 || !strings.Contains(out, id) || !strings.Contains(out, "shaping: connections (google)") {
		t.Fatalf("ls rc %d:\n%s%s", rc, out, errOut)
	}
	items := lsItems(t, o, "--domain", "gmail.example")
	if len(items) != 1 || items[0].Waiting != "shaping: connections (google)" {
		t.Fatalf("ls --json: %+v", items)
	}
	rc, out, _ = runOps(t, queueMain, append([]string{"show", id}, o.args()...)...)
	if rc != 0 || !regexp.MustCompile(`Waiting:\s+shaping: connections \(google\)`).MatchString(out) {
		t.Fatalf("show rc %d:\n%s", rc, out)
	}
}
