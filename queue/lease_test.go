package queue_test

import (
	"context"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/rs/zerolog"
)

// A deployment's existing consumer takes the lease time of the version
// that opens it: the server accepts an AckWait update on a durable, and
// Lease reports the lease time in force.
func TestOpenUpdatesAckWaitOfExistingConsumer(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	open := func(ackWait time.Duration) *queue.Queue {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		q, err := queue.Open(ctx, queue.Options{DataDir: dir, AckWait: ackWait,
			Logger: zerolog.New(zerolog.NewTestWriter(t))})
		if err != nil {
			t.Fatal(err)
		}
		return q
	}
	leaseTime := func(q *queue.Queue) (consumer, lease time.Duration) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c, err := q.JetStream().Consumer(ctx, queue.StreamName, queue.ConsumerName)
		if err != nil {
			t.Fatal(err)
		}
		es, err := q.Lease(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		defer es.Stop()
		return c.CachedInfo().Config.AckWait, es.AckWait()
	}
	q := open(2 * time.Minute) // as the consumer was before leases were short
	if c, l := leaseTime(q); c != 2*time.Minute || l != 2*time.Minute {
		t.Fatalf("first open: consumer AckWait %s, lease %s; want 2m", c, l)
	}
	q.Close()
	q = open(0)
	defer q.Close()
	if c, l := leaseTime(q); c != queue.AckWait || l != queue.AckWait {
		t.Fatalf("reopened: consumer AckWait %s, lease %s; want %s", c, l, queue.AckWait)
	}
}
