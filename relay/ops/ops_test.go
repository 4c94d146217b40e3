package ops_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/jetrelay/jetrelay/relay/bounce"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/ops"
	"github.com/jetrelay/jetrelay/relay/relaytest"
	"github.com/rs/zerolog"
)

// deferOne leases the only ready entry and defers it for an hour; no pull
// request is left waiting afterwards.
func deferOne(t *testing.T, q *queue.Queue) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	es, err := q.Lease(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	e, err := es.Next()
	if err != nil {
		t.Fatal(err)
	}
	env := *e.Env
	env.Attempt = 1
	if err := e.Defer(ctx, &env, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	es.Stop()
	s, _ := q.Stream(ctx)
	c, _ := s.Consumer(ctx, queue.ConsumerName)
	relaytest.Eventually(t, "no waiting pulls", func() bool {
		info, err := c.Info(ctx)
		return err == nil && info.NumWaiting == 0
	})
}

// inState waits until id's one entry is in state st (a retried schedule
// fires a moment later).
func inState(t *testing.T, q *queue.Queue, id string, st queue.State) bool {
	t.Helper()
	relaytest.Eventually(t, id+" "+string(st), func() bool {
		items, err := q.List(context.Background(), queue.ListOptions{ID: id})
		return err == nil && len(items) == 1 && items[0].State == st
	})
	return true
}

func TestActions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	q := queuetest.RunJetStream(t)
	cfg := config.Default()
	cfg.Hostname, cfg.DataDir, cfg.Bounces.From = "relay.test", t.TempDir(), "MAILER-DAEMON@relay.test"
	rec := &relaytest.Events{}
	em := events.NewEmitter(zerolog.New(zerolog.NewTestWriter(t)), rec)
	set := bounce.Settings{Bounces: cfg.Bounces, Hostname: cfg.Hostname, From: cfg.BouncesFrom(), DataDir: cfg.DataDir,
		MaxAge: cfg.Delivery.Retry.MaxAge.D()}
	b, err := bounce.New(ctx, bounce.Options{Settings: set, Queue: q, Events: em, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	withDSN, err := ops.New(ops.Options{Queue: q, Events: em, Bouncer: b, Actor: "test:op"})
	if err != nil {
		t.Fatal(err)
	}
	noDSN, _ := ops.New(ops.Options{Queue: q, Events: em, Actor: "test:op"})

	a := queuetest.EnqueueTo(t, q, "a.example")
	deferOne(t, q)
	bID, c := queuetest.EnqueueTo(t, q, "b.example"), queuetest.EnqueueTo(t, q, "c.example")

	do := func(op *ops.Operator, act ops.Action, r ops.Request) ops.Report {
		t.Helper()
		rep, err := op.Do(ctx, act, r)
		if err != nil {
			t.Fatalf("%s %+v: %v", act, r, err)
		}
		return rep
	}
	rep := do(noDSN, ops.Retry, ops.Request{AllDeferred: true})
	if rep != (ops.Report{Selected: 1, Done: 1}) || !inState(t, q, a, queue.StateReady) {
		t.Fatalf("retry --all: %+v", rep)
	}
	if rep = do(noDSN, ops.Hold, ops.Request{Domain: "b.example"}); rep.Done != 1 || !inState(t, q, bID, queue.StateHeld) {
		t.Fatalf("hold: %+v", rep)
	}
	var notes []string
	noteEach := func(o ops.Outcome, i, n int) { notes = append(notes, o.Result.Note) }
	rep = do(noDSN, ops.Hold, ops.Request{ID: bID, Each: noteEach})
	if rep != (ops.Report{Selected: 1, Skipped: 1}) || len(notes) != 1 || notes[0] != "already held" {
		t.Fatalf("hold again: %+v %q", rep, notes)
	}
	if rep := do(noDSN, ops.Release, ops.Request{ID: bID}); rep.Done != 1 || !inState(t, q, bID, queue.StateReady) {
		t.Fatalf("release: %+v", rep)
	}
	if _, err := noDSN.Do(ctx, ops.Delete, ops.Request{ID: c}); !errors.Is(err, ops.ErrNoBouncer) {
		t.Fatalf("delete with a DSN and no Bouncer: %v", err)
	}
	if rep := do(withDSN, ops.Delete, ops.Request{ID: c}); rep.Done != 1 {
		t.Fatalf("delete: %+v", rep)
	}
	if rep := do(noDSN, ops.Delete, ops.Request{ID: a, NoDSN: true}); rep.Done != 1 {
		t.Fatalf("delete --no-bounce: %+v", rep)
	}
	dsns, err := q.List(ctx, queue.ListOptions{Domain: "example.com"})
	if err != nil || len(dsns) != 1 || !dsns[0].Env.IsDSN || dsns[0].Env.Rcpts[0].Addr != "app@example.com" {
		t.Fatalf("want one DSN to the sender (for %s only): %+v %v", c, dsns, err)
	}
	if h, err := q.MessageHeader(ctx, dsns[0]); err != nil || !hasField(h, "Subject", "removed from the queue") {
		t.Fatalf("the delete DSN does not say an operator removed the message: %+v %v", h, err)
	}
	for id, want := range map[string]string{a: "retried,deleted", bID: "held,released", c: "dsn,deleted"} {
		if got := rec.Kinds(id); len(got) == 0 || strings.Join(got, ",") != want {
			t.Errorf("events of %s: %v, want %s", id, got, want)
		}
	}
	for _, e := range rec.All() {
		if e.Event != events.DSN && e.Actor != "test:op" {
			t.Errorf("event %s without the actor: %+v", e.Event, e)
		}
	}
	if _, err := noDSN.Do(ctx, ops.Retry, ops.Request{ID: queue.NewID()}); !errors.Is(err, ops.ErrNoMatch) {
		t.Fatalf("retry of an unknown id: %v", err)
	}
}

func TestRequestCheck(t *testing.T) {
	t.Parallel()
	id := queue.NewID()
	cases := []struct {
		name string
		act  ops.Action
		r    ops.Request
		ok   bool
	}{
		{"id", ops.Hold, ops.Request{ID: id}, true},
		{"domain", ops.Release, ops.Request{Domain: "example.net"}, true},
		{"all deferred", ops.Retry, ops.Request{AllDeferred: true}, true},
		{"no-dsn delete", ops.Delete, ops.Request{ID: id, NoDSN: true}, true},
		{"nothing selected", ops.Retry, ops.Request{}, false},
		{"two selections", ops.Hold, ops.Request{ID: id, Domain: "example.net"}, false},
		{"all deferred is retry only", ops.Delete, ops.Request{AllDeferred: true}, false},
		{"bad id", ops.Hold, ops.Request{ID: "x.y"}, false},
		{"no-dsn is delete only", ops.Hold, ops.Request{ID: id, NoDSN: true}, false},
		{"unknown action", ops.Action("bounce"), ops.Request{ID: id}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.r.Check(tc.act); (err == nil) != tc.ok {
				t.Errorf("Check = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// A retry tells every delivery process to clear its down marks: one mark
// per retried domain (by ID or --domain), one for --all; the retried
// entry keeps its attempt count.
func TestRetryMarksDomains(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	q := queuetest.RunJetStream(t)
	marks, err := q.WatchRetried(ctx)
	if err != nil {
		t.Fatal(err)
	}
	op, _ := ops.New(ops.Options{Queue: q, Actor: "test:op"})
	id := queuetest.EnqueueTo(t, q, "a.example")
	deferOne(t, q)
	next := func() queue.RetryMark {
		t.Helper()
		select {
		case m := <-marks:
			return m
		case <-ctx.Done():
			t.Fatal("no retry mark")
			return queue.RetryMark{}
		}
	}
	for _, r := range []ops.Request{{ID: id}, {Domain: "A.example"}, {AllDeferred: true}} {
		before := time.Now()
		if _, err := op.Do(ctx, ops.Retry, r); err != nil {
			t.Fatalf("retry %+v: %v", r, err)
		}
		want := "a.example"
		if r.AllDeferred {
			want = ""
		}
		if m := next(); m.Domain != want || m.At.Before(before) {
			t.Fatalf("retry %+v marked %+v, want domain %q at or after %v", r, m, want, before)
		}
		inState(t, q, id, queue.StateReady)
		items, err := q.List(ctx, queue.ListOptions{ID: id})
		if err != nil || len(items) != 1 || items[0].Env.Attempt != 1 || items[0].Env.Retried.IsZero() {
			t.Fatalf("retried entry %v %v: want 1 attempt and the Retried mark", items, err)
		}
		// Make it deferred again for the next retry.
		deferOne(t, q)
	}
}

// hasField reports a header field name whose value contains part.
func hasField(h queue.MessageHeader, name, part string) bool {
	for _, f := range h.Fields {
		if strings.EqualFold(f.Name, name) && strings.Contains(f.Value, part) {
			return true
		}
	}
	return false
}
