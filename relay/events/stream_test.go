package events_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/relaytest"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// newPublisher runs a queue and an events publisher on it.
func newPublisher(t *testing.T, o events.PublisherOptions) (*events.StreamPublisher, jetstream.JetStream) {
	t.Helper()
	q := queuetest.RunJetStream(t)
	o.Conn = q.Conn()
	o.Logger = zerolog.New(zerolog.NewTestWriter(t))
	o.Stream = events.StreamOptions{MaxAge: time.Hour, MaxBytes: 64 << 20, Replicas: 1}
	p, err := events.NewPublisher(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close(context.Background()) })
	return p, q.JetStream()
}

func collect(t *testing.T, js jetstream.JetStream, f events.Filter) []events.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []events.Record
	err := events.Tail(ctx, js, f, func(r events.Record) error { out = append(out, r); return nil })
	if err != nil {
		t.Fatalf("tail: %v", err)
	}
	return out
}

func TestEventPerOutcomeStoredWithFields(t *testing.T) {
	t.Parallel()
	p, js := newPublisher(t, events.PublisherOptions{})
	em := events.NewEmitter(zerolog.New(zerolog.NewTestWriter(t)), p)
	arrival := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	next := arrival.Add(5 * time.Minute)
	at := arrival.Add(time.Second)
	const id = "01JABCDEFGHJKMNPQRSTVW"
	want := []*events.Event{
		{
			Event: events.Accepted, QueueID: id, MsgID: "<m@x>", User: "app", MailFrom: events.Str("a@example.com"),
			RcptCount: 3, Size: 1234, TLS: "TLS1.3", DKIM: "signed",
		},
		{
			Event: events.Delivery, QueueID: id, Rcpt: "ok@example.net", Domain: "example.net", MX: "mx.example.net",
			IP: "127.0.0.2", Port: 25, TLS: "TLS1.3", TLSVerified: events.Bool(true), Attempt: 1,
			Status: events.StatusDelivered, SMTPCode: 250, SMTPEnh: "2.0.0", Reply: "queued", DurationMS: 42, Arrival: arrival,
		},
		{
			Event: events.Delivery, QueueID: id, Rcpt: "later@example.org", Domain: "example.org", MX: "mx.example.org",
			Attempt: 1, Status: events.StatusDeferred, SMTPCode: 451, SMTPEnh: "4.7.1", Reply: "greylisted",
			NextAttempt: &next, Arrival: arrival,
		},
		{
			Event: events.Delivery, QueueID: id, Rcpt: "nobody@example.com", Domain: "example.com", Attempt: 1,
			Status: events.StatusFailed, SMTPCode: 550, SMTPEnh: "5.1.1", Reply: "no such user", Arrival: arrival,
		},
		{Event: events.DSN, QueueID: id, DSNID: "01JZZZZZZZZZZZZZZZZZZZ", Rcpt: "a@example.com", Status: "queued"},
		{
			Event: events.Expired, QueueID: id, Rcpt: "later@example.org", Status: events.StatusFailed,
			Reason: "max_age reached",
		},
		{
			Event: events.Rejected, RemoteAddr: "127.0.0.1:4000", SMTPCode: 535, SMTPEnh: "5.7.8",
			Reason: "AUTH: bad credentials",
		},
		{Event: events.Suppressed, Rcpt: "nobody@example.com", Reason: "5.1.1", Actor: "delivery"},
	}
	for i, e := range want {
		e.Time = at.Add(time.Duration(i) * time.Millisecond)
		em.Emit(e)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if p.Dropped() != 0 {
		t.Fatalf("dropped %d", p.Dropped())
	}
	recs := collect(t, js, events.Filter{})
	var got []*events.Event
	for _, r := range recs {
		got = append(got, r.Event)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("events read back (-want +got):\n%s", diff)
	}
	hist := collect(t, js, events.Filter{ID: id})
	if len(hist) != 6 || hist[0].Event.Event != events.Accepted || hist[5].Event.Event != events.Expired {
		t.Fatalf("history of %s: %d events", id, len(hist))
	}
	deferred := collect(t, js, events.Filter{Status: "deferred"})
	if len(deferred) != 1 || deferred[0].Event.Rcpt != "later@example.org" {
		t.Fatalf("status filter: %+v", deferred)
	}
	if got := collect(t, js, events.Filter{From: "A@example.com"}); len(got) != 6 {
		t.Fatalf("from filter selects the message's %d events, want 6", len(got))
	}
	if got := collect(t, js, events.Filter{Domain: "example.net"}); len(got) != 1 {
		t.Fatalf("domain filter: %d", len(got))
	}
}

func TestTailFollowSeesLaterEvent(t *testing.T) {
	t.Parallel()
	p, js := newPublisher(t, events.PublisherOptions{})
	p.Publish(&events.Event{Time: time.Now(), Event: events.Accepted, QueueID: "01JAAAAAAAAAAAAAAAAAAA"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var mu sync.Mutex
	var seen []string
	done := make(chan error, 1)
	go func() {
		done <- events.Tail(ctx, js, events.Filter{Follow: true, Status: events.StatusDelivered},
			func(r events.Record) error {
				mu.Lock()
				defer mu.Unlock()
				seen = append(seen, r.Event.QueueID)
				return nil
			})
	}()
	p.Publish(&events.Event{
		Time: time.Now(), Event: events.Delivery, Status: events.StatusDelivered, QueueID: "01JBBBBBBBBBBBBBBBBBBB",
	})
	relaytest.Eventually(t, "followed event", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) == 1 && seen[0] == "01JBBBBBBBBBBBBBBBBBBB"
	})
	cancel()
	if err := <-done; err != context.Canceled {
		t.Fatalf("tail returned %v", err)
	}
}

func TestPublisherDropsInsteadOfBlocking(t *testing.T) {
	t.Parallel()
	q := queuetest.RunJetStream(t)
	var drops int
	var mu sync.Mutex
	p, err := events.NewPublisher(events.PublisherOptions{
		Conn: q.Conn(), Buffer: 2, Logger: zerolog.New(zerolog.NewTestWriter(t)),
		OnDrop: func() { mu.Lock(); drops++; mu.Unlock() },
	})
	if err != nil {
		t.Fatal(err)
	}
	// Not started: nothing drains the buffer, so the third event overflows.
	for i := 0; i < 3; i++ {
		p.Publish(&events.Event{Event: events.Accepted})
	}
	if p.Dropped() != 1 || drops != 1 {
		t.Fatalf("dropped %d (hook %d), want 1", p.Dropped(), drops)
	}
	_ = p.Close(context.Background())
	p.Publish(&events.Event{Event: events.Accepted})
	if p.Dropped() != 2 {
		t.Fatalf("publish after close: dropped %d, want 2", p.Dropped())
	}
}

func TestSubjectAndTee(t *testing.T) {
	t.Parallel()
	cases := map[string]*events.Event{
		"jr.ev.delivery." + events.Shard("01JAAAAAAAAAAAAAAAAAAA"): {
			Event: events.Delivery, QueueID: "01JAAAAAAAAAAAAAAAAAAA",
		},
		"jr.ev.rejected.-": {Event: events.Rejected},
		"jr.ev.a_b_c.-":    {Event: "a.b c"},
	}
	for want, e := range cases {
		if got := events.Subject(e); got != want {
			t.Errorf("Subject(%q) = %q, want %q", e.Event, got, want)
		}
	}
	var a, b rec
	events.Tee(&a, nil, &b).Publish(&events.Event{Event: "x"})
	if a.n != 1 || b.n != 1 {
		t.Fatalf("tee: %d %d", a.n, b.n)
	}
}

// TestSubjectsBoundedAndHistoryByID: the stream's subjects do not grow
// with the number of messages (nats-server indexes every distinct subject
// in memory), and one message's history is still exact: its events only,
// not those of another message in the same shard, and events stored under
// the older per-message subject are found too.
func TestSubjectsBoundedAndHistoryByID(t *testing.T) {
	t.Parallel()
	p, js := newPublisher(t, events.PublisherOptions{})
	const id = "01JABCDEFGHJKMNPQRSTVW"
	var sibling string // another id in the same shard
	ids := map[string]bool{}
	for i := 0; i < 3000; i++ {
		other := fmt.Sprintf("01JOTHER%014d", i)
		ids[other] = true
		p.Publish(&events.Event{Time: time.Now(), Event: events.Delivery, QueueID: other, Status: events.StatusDelivered})
		if sibling == "" && events.Shard(other) == events.Shard(id) {
			sibling = other
		}
	}
	if sibling == "" {
		t.Fatal("no id of 3000 shares a shard with the test id")
	}
	p.Publish(&events.Event{Time: time.Now(), Event: events.Accepted, QueueID: id})
	p.Publish(&events.Event{Time: time.Now(), Event: events.Delivery, QueueID: id, Status: events.StatusDelivered})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// An event written by an older jetrelay under jr.ev.<kind>.<queue_id>.
	data, _ := json.Marshal(&events.Event{
		Time: time.Now(), Event: events.Expired, QueueID: id, Status: events.StatusFailed,
	})
	if _, err := js.Publish(ctx, events.SubjPrefix+".expired."+id, data); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(events.SubjPrefix+".>"))
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 3003 || len(info.State.Subjects) > 2*257+1 {
		t.Fatalf("%d events on %d subjects; want 3003 on at most %d", info.State.Msgs, len(info.State.Subjects), 2*257+1)
	}
	hist := collect(t, js, events.Filter{ID: id})
	var kinds []string
	for _, r := range hist {
		if r.Event.QueueID != id {
			t.Fatalf("history of %s holds an event of %s", id, r.Event.QueueID)
		}
		kinds = append(kinds, r.Event.Event)
	}
	if want := []string{events.Accepted, events.Delivery, events.Expired}; !slices.Equal(kinds, want) {
		t.Fatalf("history of %s: %v, want %v", id, kinds, want)
	}
	if got := collect(t, js, events.Filter{ID: sibling}); len(got) != 1 || got[0].Event.QueueID != sibling {
		t.Fatalf("history of %s (same shard): %d events", sibling, len(got))
	}
}

type rec struct{ n int }

func (r *rec) Publish(*events.Event) { r.n++ }

// An attached publisher (ops commands) never creates or changes the
// stream: without one Start fails; with one its limits stay the server's.
func TestPublisherAttachLeavesStreamAlone(t *testing.T) {
	t.Parallel()
	q := queuetest.RunJetStream(t)
	ctx := context.Background()
	attached := func() *events.StreamPublisher {
		p, err := events.NewPublisher(events.PublisherOptions{Conn: q.Conn(), Logger: zerolog.Nop(), Attach: true,
			Stream: events.StreamOptions{MaxAge: time.Minute}})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	if err := attached().Start(ctx); err == nil {
		t.Fatal("attached Start without a stream succeeded")
	}
	if _, err := q.JetStream().Stream(ctx, events.StreamName); err == nil {
		t.Fatal("attached Start created the stream")
	}
	streamOpts := events.StreamOptions{MaxAge: time.Hour, Replicas: 1}
	if _, err := events.EnsureStream(ctx, q.JetStream(), streamOpts); err != nil {
		t.Fatal(err)
	}
	p := attached()
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	info := emitOneAndClose(t, ctx, p, q.JetStream())
	if info.Config.MaxAge != time.Hour || info.State.Msgs != 1 {
		t.Fatalf("stream after an attached publisher: max_age %v, %d msgs", info.Config.MaxAge, info.State.Msgs)
	}
}

// TestPublisherStartAgainAfterAFailure: serve starts the publisher under
// queue.Await, which calls Start again after a not-ready answer (a cluster
// electing its meta leader). A failed Start must have started nothing, be
// reported as transient, and the next Start must work once.
func TestPublisherStartAgainAfterAFailure(t *testing.T) {
	t.Parallel()
	q := queuetest.RunJetStream(t)
	p, err := events.NewPublisher(events.PublisherOptions{Conn: q.Conn(), Logger: zerolog.Nop(),
		Stream: events.StreamOptions{MaxAge: time.Hour, Replicas: 1}})
	if err != nil {
		t.Fatal(err)
	}
	expired, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	err = p.Start(expired)
	if err == nil || !queue.Transient(err) {
		t.Fatalf("Start past its deadline: %v, want a transient error", err)
	}
	ctx, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel2()
	if err := p.Start(ctx); err != nil {
		t.Fatalf("Start after a failed one: %v", err)
	}
	if err := p.Start(ctx); err == nil {
		t.Fatal("a third Start succeeded: the publisher would run twice")
	}
	info := emitOneAndClose(t, ctx, p, q.JetStream())
	if info.State.Msgs != 1 {
		t.Fatalf("%d events stored, want 1", info.State.Msgs)
	}
}

// emitOneAndClose emits one event through p, closes p (nothing dropped)
// and returns the events stream's info afterwards.
func emitOneAndClose(t *testing.T, ctx context.Context, p *events.StreamPublisher, js jetstream.JetStream) *jetstream.StreamInfo {
	t.Helper()
	events.NewEmitter(zerolog.Nop(), p).Emit(&events.Event{Event: events.Held, QueueID: "q1"})
	if err := p.Close(ctx); err != nil || p.Dropped() != 0 {
		t.Fatalf("close: %v, %d dropped", err, p.Dropped())
	}
	s, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info
}
