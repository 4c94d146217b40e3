package webhooks_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/webhooks"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

var secret = []byte("s3cret-for-tests")

// env is a queue with the events stream, its publisher and a receiver.
type env struct {
	t   *testing.T
	q   *queue.Queue
	js  jetstream.JetStream
	pub *events.StreamPublisher
	rc  *receiver
	url string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	q := queuetest.RunJetStream(t)
	p, err := events.NewPublisher(events.PublisherOptions{Conn: q.Conn(), Logger: testLog(t),
		Stream: events.StreamOptions{MaxAge: time.Hour, MaxBytes: 64 << 20, Replicas: 1}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close(context.Background()) })
	rc := &receiver{t: t}
	srv := httptest.NewServer(rc) // 127.0.0.1
	t.Cleanup(srv.Close)
	return &env{t: t, q: q, js: q.JetStream(), pub: p, rc: rc, url: srv.URL + "/hooks/mail"}
}

func testLog(t *testing.T) zerolog.Logger { return zerolog.New(zerolog.NewTestWriter(t)) }

// hook is a webhook on the env's receiver with small batches.
func (e *env) hook(name string) webhooks.Hook {
	return webhooks.Hook{Name: name, URL: e.url, Secret: secret, BatchMax: 10, BatchWait: 200 * time.Millisecond,
		MaxAge: time.Hour, Timeout: 5 * time.Second}
}

// manager runs a Manager on its own NATS connection (a node of its own),
// with short ack and pin timers and fast retries.
func (e *env) manager(reg prometheus.Registerer) (*webhooks.Manager, *nats.Conn) {
	e.t.Helper()
	return e.managerWith(reg, 2*time.Second, 4*time.Second)
}

// managerWith is manager with the given ack wait and pin TTL.
func (e *env) managerWith(reg prometheus.Registerer, ackWait, pinTTL time.Duration) (*webhooks.Manager, *nats.Conn) {
	e.t.Helper()
	nc, err := nats.Connect("", nats.InProcessServer(e.q.Embedded()))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := webhooks.OpenBucket(ctx, js, 1)
	if err != nil {
		e.t.Fatal(err)
	}
	var met *webhooks.Metrics
	if reg != nil {
		if met, err = webhooks.NewMetrics(reg); err != nil {
			e.t.Fatal(err)
		}
	}
	m := webhooks.NewManager(webhooks.Options{JetStream: js, KV: kv, Logger: testLog(e.t), Metrics: met,
		Node: fmt.Sprintf("node-%p", nc), AckWait: ackWait, PinnedTTL: pinTTL,
		RetryBase: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond})
	e.t.Cleanup(m.Close)
	return m, nc
}

// publishMessages stores, for each of n messages, two deferred attempts
// and a delivery, plus an accepted event no webhook receives.
func (e *env) publishMessages(n int, user string) []string {
	var ids []string
	for i := range n {
		id := fmt.Sprintf("Q%02d-%s", i, user)
		ids = append(ids, id)
		e.pub.Publish(&events.Event{Time: time.Now().UTC(), Event: events.Accepted, QueueID: id, User: user})
		for a, st := range []string{events.StatusDeferred, events.StatusDeferred, events.StatusDelivered} {
			code := 451
			if st == events.StatusDelivered {
				code = 250
			}
			e.pub.Publish(&events.Event{Time: time.Now().UTC(), Event: events.Delivery, QueueID: id,
				MsgID: "<" + id + "@example.com>", User: user, Rcpt: "rcpt@example.org", Status: st,
				SMTPCode: code, Attempt: a + 1, MX: "mx.example.org", TLS: "TLSv1.3",
				Meta: map[string]string{"order": id}, Tag: "welcome"})
		}
	}
	return ids
}

// receiver is the application's endpoint: it verifies signatures, keeps
// the batches it answered 2xx, and answers as reply says.
type receiver struct {
	t     *testing.T
	mu    sync.Mutex
	posts int
	bad   int
	ok    [][]webhooks.Payload
	first []string // the first event id of every POST, answered 2xx or not
	// reply picks the status of the n-th POST (from 1); 0 = 200. It may
	// block (a timeout) until the request's context ends.
	reply func(n int, r *http.Request) int
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	good := webhooks.Verify(secret, r.Header.Get(webhooks.SignatureHeader), body) &&
		r.Header.Get("Content-Type") == "application/json"
	var ids []struct {
		EventID string `json:"event_id"`
	}
	_ = json.Unmarshal(body, &ids)
	rc.mu.Lock()
	if len(ids) > 0 {
		rc.first = append(rc.first, ids[0].EventID)
	}
	rc.posts++
	n, reply := rc.posts, rc.reply
	if !good {
		rc.bad++
	}
	rc.mu.Unlock()
	code := http.StatusOK
	if reply != nil {
		if c := reply(n, r); c != 0 {
			code = c
		}
	}
	if r.Context().Err() != nil {
		return
	}
	if !good {
		code = http.StatusUnauthorized
	}
	var batch []webhooks.Payload
	if code/100 == 2 {
		if err := json.Unmarshal(body, &batch); err != nil {
			rc.t.Errorf("receiver: %v", err)
		}
		rc.mu.Lock()
		rc.ok = append(rc.ok, batch)
		rc.mu.Unlock()
	}
	w.WriteHeader(code)
}

func (rc *receiver) setReply(f func(n int, r *http.Request) int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.reply = f
}

// accepted returns the events of 2xx batches in order, and the batches.
func (rc *receiver) accepted() ([]webhooks.Payload, [][]webhooks.Payload) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var all []webhooks.Payload
	for _, b := range rc.ok {
		all = append(all, b...)
	}
	return all, append([][]webhooks.Payload(nil), rc.ok...)
}

// distinct counts the distinct event ids accepted.
func (rc *receiver) distinct() int {
	all, _ := rc.accepted()
	seen := map[string]bool{}
	for _, p := range all {
		seen[p.EventID] = true
	}
	return len(seen)
}

func (rc *receiver) counts() (posts, bad int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.posts, rc.bad
}

// metric reads a webhook's counter from reg.
func metric(t *testing.T, reg *prometheus.Registry, name, hook string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "webhook" && l.GetValue() == hook {
					if m.GetCounter() != nil {
						return m.GetCounter().GetValue()
					}
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	return 0
}

// checkOrder fails when a message's attempts arrive out of order.
func checkOrder(t *testing.T, all []webhooks.Payload) {
	t.Helper()
	last := map[string]int{}
	for _, p := range all {
		if p.Attempt <= last[p.QueueID] {
			t.Fatalf("%s: attempt %d after attempt %d", p.QueueID, p.Attempt, last[p.QueueID])
		}
		last[p.QueueID] = p.Attempt
	}
}
