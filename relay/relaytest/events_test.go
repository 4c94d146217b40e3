package relaytest

import (
	"sync/atomic"
	"testing"

	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/rs/zerolog"
)

// TestEvents: published events and logged event lines are recorded once
// each, found by kind, recipient and queue id, and waited for.
func TestEvents(t *testing.T) {
	t.Parallel()
	rec := &Events{}
	em := events.NewEmitter(zerolog.Nop(), rec)
	em.Emit(&events.Event{Event: events.Delivery, QueueID: "q1", Rcpt: "a@x.test", Status: events.StatusDeferred,
		SMTPCode: 451})
	log := zerolog.New(rec)
	log.Info().Str("event", "destination_down").Str("destination", "x.test").Int("failures", 3).Send()
	log.Info().Str("event", events.Delivery).Str("queue_id", "q1").Str("rcpt", "a@x.test").
		Str("status", events.StatusDelivered).Int("attempt", 2).Str("attempt_note", "ignored").Send()
	log.Info().Str("event", events.Delivery).Str("attempt", "not a number").Send() // kept, attempt left out
	log.Info().Msg("no event field")
	if n := len(rec.All()); n != 4 {
		t.Fatalf("%d events recorded, want 4: %+v", n, rec.All())
	}
	got := rec.Find(events.Delivery, Rcpt("a@x.test", events.StatusDeferred))
	if len(got) != 1 || got[0].SMTPCode != 451 {
		t.Fatalf("deferred: %+v", got)
	}
	if rec.Count(events.Delivery, Rcpt("a@x.test", "")) != 2 || rec.Count("destination_down", nil) != 1 {
		t.Fatal("counts by recipient or by a log-only kind are wrong")
	}
	if k := rec.Kinds("q1"); len(k) != 2 || k[0] != events.Delivery {
		t.Fatalf("kinds of q1: %v", k)
	}
	var calls atomic.Int32
	go em.Emit(&events.Event{Event: events.DSN, QueueID: "q2"})
	e := rec.WaitFor(t, events.DSN, func(e events.Event) bool { calls.Add(1); return e.QueueID == "q2" })
	if e.QueueID != "q2" || calls.Load() == 0 {
		t.Fatalf("WaitFor returned %+v", e)
	}
}

// TestEventually: it returns once the condition holds and polls until then.
func TestEventually(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	Eventually(t, "three polls", func() bool { return n.Add(1) >= 3 })
	if n.Load() != 3 {
		t.Fatalf("condition evaluated %d times, want 3", n.Load())
	}
}
