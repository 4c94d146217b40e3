// Package queuetest runs a real embedded JetStream queue for tests.
package queuetest

import (
	"context"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Options tweak RunJetStream.
type Options struct {
	// DataDir reuses a directory (for restart tests); default t.TempDir().
	DataDir string
	// Listen opens a TCP client port ("127.0.0.1:0" for a random one).
	Listen string
}

// RunJetStream opens a queue on an embedded nats-server storing under a
// temp dir, closed at test end.
func RunJetStream(t testing.TB, opts ...Options) *queue.Queue {
	t.Helper()
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	if o.DataDir == "" {
		o.DataDir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	q, err := queue.Open(ctx, queue.Options{
		DataDir: o.DataDir,
		Listen:  o.Listen,
		Logger:  zerolog.New(zerolog.NewTestWriter(t)),
	})
	if err != nil {
		t.Fatalf("open queue: %v", err)
	}
	t.Cleanup(q.Close)
	return q
}

// Eventually polls cond every 10ms until it holds or the deadline passes.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// StreamMsgs returns how many messages the queue stream holds (entries,
// schedules, held entries and body chunks), after sweeping the finished
// entries this process acknowledged.
func StreamMsgs(t testing.TB, q *queue.Queue) uint64 {
	t.Helper()
	return StreamInfo(t, q, "").State.Msgs
}

// StreamInfo returns the info of the stream that stores filter's subjects
// (the queue stream, or the park stream for "jr.p..."); with a subject
// filter (such as "jr.s.>") its State.Subjects holds the counts of the
// matching subjects.
func StreamInfo(t testing.TB, q *queue.Queue, filter string) *jetstream.StreamInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Finished entries stay until the sweeper purges them: count after it.
	// (Await: a cluster may be electing the consumer's leader.)
	if err := q.Await(ctx, "sweep", q.Sweep); err != nil {
		t.Fatal(err)
	}
	s, err := q.JetStream().Stream(ctx, queue.StreamFor(filter))
	if err != nil {
		t.Fatal(err)
	}
	var opts []jetstream.StreamInfoOpt
	if filter != "" {
		opts = append(opts, jetstream.WithSubjectFilter(filter))
	}
	info, err := s.Info(ctx, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// EnqueueTo stores a one-recipient message to u@domain from
// app@example.com that arrived an hour ago, and returns its queue id.
func EnqueueTo(t testing.TB, q *queue.Queue, domain string) string {
	t.Helper()
	e := &queue.Envelope{From: "app@example.com", Domain: domain, Arrival: time.Now().Add(-time.Hour),
		Rcpts: []queue.Recipient{{Addr: "u@" + domain}}}
	m := &queue.Message{Body: []byte("From: app@example.com\r\nSubject: t\r\n\r\nhi\r\n"),
		Entries: []*queue.Envelope{e}}
	if err := q.Enqueue(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	return m.ID
}
