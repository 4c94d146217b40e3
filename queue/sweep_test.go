package queue_test

import (
	"context"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/rs/zerolog"
)

// TestSweepPastAHeldFloor: a lease that stays open (a slow delivery) holds
// the consumer's ack floor. Entries finished after it are shown as in
// flight, never as ready, and are deleted on their own once FinishedGrace
// has passed, so one stuck delivery does not keep the rest on disk; the
// open one is kept and, once done, swept with the floor. Nothing
// unfinished is removed on the way.
func TestSweepPastAHeldFloor(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	q, err := queue.Open(ctx, queue.Options{DataDir: t.TempDir(), FinishedGrace: 200 * time.Millisecond,
		Logger: zerolog.New(zerolog.NewTestWriter(t))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(q.Close)
	for _, d := range []string{"slow.example", "a.example", "b.example", "c.example"} {
		queuetest.EnqueueTo(t, q, d)
	}
	es, err := q.Lease(ctx, 8)
	if err != nil {
		t.Fatal(err)
	}
	defer es.Stop()
	var slow *queue.Entry
	for range 4 {
		e := nextEntry(t, es)
		if e.Env.Domain == "slow.example" {
			slow = e // held open: the floor stays below it
			continue
		}
		if err := e.Done(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// The late, unleased entry must survive every sweep below.
	late := queuetest.EnqueueTo(t, q, "late.example")
	queuetest.Eventually(t, 60*time.Second, "the finished entries above the floor deleted", func() bool {
		info := queuetest.StreamInfo(t, q, "jr.q.>")
		return info.State.Msgs == 2 // slow (in flight) and late (ready)
	})
	items, err := q.List(ctx, queue.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]queue.State{}
	for _, it := range items {
		got[it.Env.Domain] = it.State
	}
	// late.example may be pulled ahead by the lease already (in flight).
	if len(got) != 2 || got["slow.example"] != queue.StateInFlight || got["late.example"] == "" {
		t.Fatalf("listed %v; want slow.example in flight and late.example, nothing finished", got)
	}
	if err := slow.Done(ctx); err != nil {
		t.Fatal(err)
	}
	e := nextEntry(t, es)
	if e.Env.ID != late {
		t.Fatalf("leased %s, want the late entry %s", e.Env.ID, late)
	}
	if err := e.Done(ctx); err != nil {
		t.Fatal(err)
	}
	if n := queuetest.StreamMsgs(t, q); n != 0 {
		t.Fatalf("%d messages left after every entry finished", n)
	}
}
