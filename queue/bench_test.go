package queue_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/queue/queuetest"
)

// BenchmarkEnqueue4KiB measures durable (sync=always) single-entry enqueues
// from parallel submitters, as 16 client connections would make them.
func BenchmarkEnqueue4KiB(b *testing.B) {
	q := queuetest.RunJetStream(b)
	body := bytes.Repeat([]byte("x"), 4096)
	ctx := context.Background()
	b.SetBytes(int64(len(body)))
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m := &queue.Message{Body: body, Entries: []*queue.Envelope{{From: "a@example.com", Domain: "example.net",
				Rcpts: []queue.Recipient{{Addr: "u@example.net"}}, Arrival: time.Now()}}}
			if err := q.Enqueue(ctx, m); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkEnvelopeCodec measures the Jr-Env header encode+decode.
func BenchmarkEnvelopeCodec(b *testing.B) {
	e := &queue.Envelope{ID: queue.NewID(), From: "billing@example.com", Domain: "example.net", Arrival: time.Now(),
		Rcpts: []queue.Recipient{{Addr: "a@example.net", Notify: []string{"FAILURE"}}, {Addr: "b@example.net"}}, Size: 4096}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		raw, err := e.Marshal()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := queue.UnmarshalEnvelope(raw); err != nil {
			b.Fatal(err)
		}
	}
}
