package queue_test

import (
	"bytes"
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/nats-io/nats.go/jetstream"
)

// BenchmarkAckMode measures the decision "fsyncs per message" in
// DESIGN-NOTES: 4 KiB messages published by 16 goroutines and double-acked
// by 16 workers of one explicit-ack pull consumer, on a sync=always
// server, in a work-queue stream (each ack deletes its message: a tombstone,
// fsynced) and in a limits stream whose acknowledged range is purged below
// the consumer's ack floor every 100 ms (one fsync per purge). Count the
// fsyncs with strace on the test binary (docs/performance.md, "Where the
// fsyncs go"). Not the queue's model: a prototype's cost, kept to repeat it.
func BenchmarkAckMode(b *testing.B) {
	for _, mode := range []struct {
		name      string
		retention jetstream.RetentionPolicy
	}{{"workqueue", jetstream.WorkQueuePolicy}, {"limits_purge", jetstream.LimitsPolicy}} {
		b.Run(mode.name, func(b *testing.B) {
			benchAckMode(b, mode.retention)
		})
	}
}

func benchAckMode(b *testing.B, retention jetstream.RetentionPolicy) {
	q := queuetest.RunJetStream(b)
	ctx := context.Background()
	s, err := q.JetStream().CreateStream(ctx, jetstream.StreamConfig{Name: "ACKMODE", Subjects: []string{"am.>"},
		Retention: retention, Storage: jetstream.FileStorage})
	if err != nil {
		b.Fatal(err)
	}
	c, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "d", FilterSubject: "am.q.>",
		AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 20000})
	if err != nil {
		b.Fatal(err)
	}
	it, err := c.Messages(jetstream.PullMaxMessages(256))
	if err != nil {
		b.Fatal(err)
	}
	defer it.Stop()
	b.SetBytes(4096)
	b.ResetTimer()
	done, wg := ackModeLoad(ctx, b, q.JetStream(), it)
	stop := make(chan struct{})
	if retention == jetstream.LimitsPolicy {
		go purgeAcked(ctx, s, c, stop)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		b.Fatal("not all messages acknowledged in 5 minutes")
	}
	b.StopTimer()
	close(stop)
	it.Stop()
	wg.Wait()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
}

// ackModeLoad publishes b.N messages of 4 KiB from 16 goroutines and
// double-acks what it reads from 16 workers; done closes after the last ack.
func ackModeLoad(ctx context.Context, b *testing.B, js jetstream.JetStream, it jetstream.MessagesContext) (chan struct{}, *sync.WaitGroup) {
	body := bytes.Repeat([]byte("x"), 4096)
	n := int64(b.N)
	var next, acked atomic.Int64
	done := make(chan struct{})
	work := make(chan jetstream.Msg)
	wg := &sync.WaitGroup{}
	for w := 0; w < 16; w++ {
		wg.Add(2)
		go func() { // a publisher
			defer wg.Done()
			for i := next.Add(1); i <= n; i = next.Add(1) {
				if _, err := js.Publish(ctx, "am.q."+strconv.FormatInt(i, 10), body); err != nil {
					b.Error(err)
					return
				}
			}
		}()
		go func() { // a worker
			defer wg.Done()
			for m := range work {
				if err := m.DoubleAck(ctx); err != nil {
					b.Error(err)
				}
				if acked.Add(1) == n {
					close(done)
				}
			}
		}()
	}
	go func() { // the reader
		defer close(work)
		for {
			m, err := it.Next()
			if err != nil {
				return
			}
			work <- m
		}
	}()
	return done, wg
}

// purgeAcked purges am.q.> below the consumer's ack floor every 100 ms.
func purgeAcked(ctx context.Context, s jetstream.Stream, c jetstream.Consumer, stop chan struct{}) {
	tk := time.NewTicker(100 * time.Millisecond)
	defer tk.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tk.C:
		}
		ci, err := c.Info(ctx)
		if err != nil || ci.AckFloor.Stream == 0 {
			continue
		}
		_ = s.Purge(ctx, jetstream.WithPurgeSubject("am.q.>"), jetstream.WithPurgeSequence(ci.AckFloor.Stream+1))
	}
}

// BenchmarkEnqueueBatch8 enqueues 4 KiB messages to 8 recipient domains,
// one atomic batch each (8 entries and a body chunk): under strace it
// shows what a batch costs in fsyncs against BenchmarkEnqueue4KiB's
// single publishes ("fsyncs per message" in DESIGN-NOTES).
func BenchmarkEnqueueBatch8(b *testing.B) {
	q := queuetest.RunJetStream(b)
	body := bytes.Repeat([]byte("x"), 4096)
	ctx := context.Background()
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		m := &queue.Message{Body: body}
		for d := 0; d < 8; d++ {
			m.Entries = append(m.Entries, &queue.Envelope{From: "a@example.com", Domain: "d" + strconv.Itoa(d) + ".example.net",
				Rcpts: []queue.Recipient{{Addr: "u@example.net"}}, Arrival: time.Now()})
		}
		if err := q.Enqueue(ctx, m); err != nil {
			b.Fatal(err)
		}
	}
}
