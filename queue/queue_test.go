package queue_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/nats-io/nats.go/jetstream"
)

func env(domain string, rcpts ...string) *queue.Envelope {
	e := &queue.Envelope{From: "a@example.com", Domain: domain, Arrival: time.Now()}
	for _, r := range rcpts {
		e.Rcpts = append(e.Rcpts, queue.Recipient{Addr: r})
	}
	return e
}

func nextEntry(t *testing.T, es *queue.Entries) *queue.Entry {
	t.Helper()
	type res struct {
		e   *queue.Entry
		err error
	}
	ch := make(chan res, 1)
	go func() {
		for {
			e, err := es.Next()
			// A missed heartbeat (a loaded machine) is reported, not fatal:
			// the iterator goes on.
			if !errors.Is(err, jetstream.ErrNoHeartbeat) {
				ch <- res{e, err}
				return
			}
		}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("next: %v", r.err)
		}
		return r.e
	case <-time.After(30 * time.Second):
		t.Fatal("no entry within 30s")
	}
	return nil
}

func TestInlineEnqueueLeaseDone(t *testing.T) {
	t.Parallel()
	q := queuetest.RunJetStream(t)
	ctx := context.Background()
	body := []byte("Subject: hi\r\n\r\nhello\r\n")
	m := &queue.Message{Body: body, Entries: []*queue.Envelope{env("example.net", "x@example.net")}}
	if err := q.Enqueue(ctx, m); err != nil {
		t.Fatal(err)
	}
	es, err := q.Lease(ctx, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer es.Stop()
	e := nextEntry(t, es)
	if e.Env.ID != m.ID || e.Env.Domain != "example.net" || e.Env.Chunks != 0 {
		t.Fatalf("envelope %+v", e.Env)
	}
	b, err := e.Body(ctx)
	if err != nil || !bytes.Equal(b, body) {
		t.Fatalf("body %q %v", b, err)
	}
	if err := e.Done(ctx); err != nil {
		t.Fatal(err)
	}
	// Done's ack is confirmed by the server (a double ack): the entry is
	// finished for every reader at once, and the background sweeper
	// (sweep.go) purges it below the ack floor soon after.
	if items, err := q.List(ctx, queue.ListOptions{}); err != nil || len(items) != 0 {
		t.Fatalf("entries listed after Done: %v, %v; want none", items, err)
	}
	s, err := q.Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	queuetest.Eventually(t, 30*time.Second, "the sweeper to purge the finished entry", func() bool {
		info, err := s.Info(ctx)
		return err == nil && info.State.Msgs == 0
	})
}

func TestChunkedMultiDomainAtomicAndReclaim(t *testing.T) {
	t.Parallel()
	q := queuetest.RunJetStream(t)
	ctx := context.Background()
	body := bytes.Repeat([]byte("0123456789abcdef"), (20<<20)/16) // 20 MiB
	m := &queue.Message{Body: body, Entries: []*queue.Envelope{
		env("a.example", "x@a.example"), env("b.example", "y@b.example"),
	}}
	if err := q.Enqueue(ctx, m); err != nil {
		t.Fatal(err)
	}
	es, err := q.Lease(ctx, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer es.Stop()
	seen := map[string]bool{}
	for i := 0; i < 2; i++ {
		e := nextEntry(t, es)
		if e.Env.Chunks < 2 {
			t.Fatalf("expected chunked body, chunks=%d", e.Env.Chunks)
		}
		b, err := e.Body(ctx)
		if err != nil || !bytes.Equal(b, body) {
			t.Fatalf("body mismatch (%d bytes) %v", len(b), err)
		}
		seen[e.Env.Domain] = true
		if err := e.Done(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if !seen["a.example"] || !seen["b.example"] {
		t.Fatalf("domains %v", seen)
	}
	s, _ := q.Stream(ctx)
	info, _ := s.Info(ctx)
	if info.State.Msgs != 0 {
		t.Fatalf("stream keeps %d msgs after all entries done", info.State.Msgs)
	}
}

func TestDeferReturnsAtScheduledTime(t *testing.T) {
	t.Parallel()
	q := queuetest.RunJetStream(t)
	ctx := context.Background()
	m := &queue.Message{
		Body:    []byte("x\r\n"),
		Entries: []*queue.Envelope{env("example.org", "a@example.org", "b@example.org")},
	}
	if err := q.Enqueue(ctx, m); err != nil {
		t.Fatal(err)
	}
	es, err := q.Lease(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer es.Stop()
	e := nextEntry(t, es)
	next := *e.Env
	next.Rcpts = next.Rcpts[1:]
	next.Attempt = 1
	at := time.Now().Add(2 * time.Second)
	if err := e.Defer(ctx, &next, at); err != nil {
		t.Fatal(err)
	}
	e2 := nextEntry(t, es)
	if time.Now().Before(at.Truncate(time.Second)) {
		t.Fatalf("deferred entry came back early")
	}
	if e2.Env.Attempt != 1 || len(e2.Env.Rcpts) != 1 || e2.Env.Rcpts[0].Addr != "b@example.org" {
		t.Fatalf("deferred envelope %+v", e2.Env)
	}
	if b, _ := e2.Body(ctx); string(b) != "x\r\n" {
		t.Fatalf("body %q", b)
	}
	if err := e2.Done(ctx); err != nil {
		t.Fatal(err)
	}
	s, _ := q.Stream(ctx)
	queuetest.Eventually(t, 10*time.Second, "empty stream", func() bool {
		info, _ := s.Info(ctx)
		return info.State.Msgs == 0
	})
}
