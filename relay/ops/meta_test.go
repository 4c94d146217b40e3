package ops_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/ops"
	"github.com/jetrelay/jetrelay/relay/relaytest"
	"github.com/rs/zerolog"
)

// TestActionEventsCarryMeta (issue 18, point 3): an operator's action on
// a message with metadata is evented with it.
func TestActionEventsCarryMeta(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	q := queuetest.RunJetStream(t)
	rec := &relaytest.Events{}
	op, err := ops.New(ops.Options{Queue: q, Events: events.NewEmitter(zerolog.Nop(), rec), Actor: "test:op"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"order": "42"}
	m := &queue.Message{Body: []byte("From: app@example.com\r\nSubject: t\r\n\r\nhi\r\n"), Entries: []*queue.Envelope{{
		From: "app@example.com", Domain: "a.example", Arrival: time.Now(), Rcpts: []queue.Recipient{{Addr: "u@a.example"}},
		Meta: want, Tag: "welcome",
	}}}
	if err := q.Enqueue(ctx, m); err != nil {
		t.Fatal(err)
	}
	if rep, err := op.Do(ctx, ops.Hold, ops.Request{ID: m.ID}); err != nil || rep.Done != 1 {
		t.Fatalf("hold: %+v %v", rep, err)
	}
	held := rec.Find(events.Held, nil)
	if len(held) != 1 || !cmp.Equal(held[0].Meta, want) || held[0].Tag != "welcome" {
		t.Fatalf("held events %+v", held)
	}
}
