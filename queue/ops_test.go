package queue_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/queue/queuetest"
)

// opsFixture is a queue with entries in every state:
//
//	d1, d1b  one.example  deferred (1h)
//	inflight one.example  leased, not acknowledged
//	multi    one.example + two.example, ready (chunked body)
//	ready    two.example  ready
type opsFixture struct {
	q                                  *queue.Queue
	d1, d1b, inflight, multi, readyMsg *queue.Message
}

func enqueue(t *testing.T, q *queue.Queue, body string, envs ...*queue.Envelope) *queue.Message {
	t.Helper()
	m := &queue.Message{Body: []byte(body), Entries: envs}
	if err := q.Enqueue(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	return m
}

func newOpsFixture(t *testing.T) *opsFixture {
	t.Helper()
	ctx := context.Background()
	f := &opsFixture{q: queuetest.RunJetStream(t)}
	f.d1 = enqueue(t, f.q, "d1\r\n", env("one.example", "a@one.example"))
	f.d1b = enqueue(t, f.q, "d1b\r\n", env("one.example", "b@one.example"))
	f.inflight = enqueue(t, f.q, "fly\r\n", env("one.example", "c@one.example"))
	es, err := f.q.Lease(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		e := nextEntry(t, es)
		next := *e.Env
		next.Attempt = 1
		next.LastReply = queue.Reply{Code: 451, Enh: "4.7.1", Text: "greylisted", MX: "mx.one.example"}
		if err := e.Defer(ctx, &next, time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	if e := nextEntry(t, es); e.Env.ID != f.inflight.ID {
		t.Fatalf("leased %s, want %s", e.Env.ID, f.inflight.ID)
	}
	es.Stop()
	// No pull request may be left waiting, or new entries would be handed to it.
	s, _ := f.q.Stream(ctx)
	c, _ := s.Consumer(ctx, queue.ConsumerName)
	queuetest.Eventually(t, 20*time.Second, "no waiting pull requests", func() bool {
		info, err := c.Info(ctx)
		return err == nil && info.NumWaiting == 0
	})
	f.multi = enqueue(t, f.q, "multi\r\n", env("two.example", "x@two.example"), env("one.example", "y@one.example"))
	f.readyMsg = enqueue(t, f.q, "ready\r\n", env("two.example", "z@two.example"))
	return f
}

// item returns the single stored entry of id for domain.
func (f *opsFixture) item(t *testing.T, id, domain string) *queue.Item {
	t.Helper()
	items, err := f.q.List(context.Background(), queue.ListOptions{ID: id, Domain: domain})
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 1 {
		t.Fatalf("%s/%s: %d stored entries, want 1", id, domain, len(items))
	}
	return items[0]
}

// waitState polls until id/domain is stored once in state st under prefix.
func (f *opsFixture) waitState(t *testing.T, id, domain string, st queue.State, prefix string) *queue.Item {
	t.Helper()
	var it *queue.Item
	queuetest.Eventually(t, 20*time.Second, id+" "+string(st), func() bool {
		items, err := f.q.List(context.Background(), queue.ListOptions{ID: id, Domain: domain})
		if err != nil || len(items) != 1 {
			return false
		}
		it = items[0]
		return it.State == st && strings.HasPrefix(it.Subject, prefix+".")
	})
	return it
}

func TestOpsListCountsStats(t *testing.T) {
	t.Parallel()
	f := newOpsFixture(t)
	ctx := context.Background()
	counts, err := f.q.Counts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]map[queue.State]int{
		"one.example": {queue.StateReady: 1, queue.StateInFlight: 1, queue.StateDeferred: 2},
		"two.example": {queue.StateReady: 2},
	}
	if len(counts) != 2 {
		t.Fatalf("counts %+v", counts)
	}
	for _, dc := range counts {
		for _, st := range queue.States {
			if dc.Counts[st] != want[dc.Domain][st] {
				t.Errorf("%s %s = %d, want %d", dc.Domain, st, dc.Counts[st], want[dc.Domain][st])
			}
		}
	}
	d := f.item(t, f.d1.ID, "one.example")
	if d.State != queue.StateDeferred || d.Env.Attempt != 1 || d.Env.LastReply.Enh != "4.7.1" ||
		time.Until(d.Env.NextAt) < 50*time.Minute || d.Header.Get("Nats-Schedule") == "" {
		t.Fatalf("deferred item %+v env %+v", d, d.Env)
	}
	if it := f.item(t, f.inflight.ID, ""); it.State != queue.StateInFlight {
		t.Fatalf("in-flight entry listed as %s", it.State)
	}
	items, _ := f.q.List(ctx, queue.ListOptions{ID: f.multi.ID})
	if len(items) != 2 || items[0].State != queue.StateReady {
		t.Fatalf("multi entries %+v", items)
	}
	if items, _ := f.q.List(ctx, queue.ListOptions{State: queue.StateReady}); len(items) != 3 {
		t.Fatalf("ready entries: %d, want 3", len(items))
	}
	stats, err := f.q.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantCounts := map[queue.State]int{
		queue.StateReady: 3, queue.StateInFlight: 1, queue.StateDeferred: 2, queue.StateHeld: 0,
	}
	for st, n := range wantCounts {
		if stats[st].Count != n {
			t.Errorf("stats %s count %d, want %d", st, stats[st].Count, n)
		}
		if n > 0 && stats[st].Oldest.IsZero() {
			t.Errorf("stats %s: no oldest", st)
		}
	}
}

func TestOpsRetryHoldRelease(t *testing.T) {
	t.Parallel()
	f := newOpsFixture(t)
	ctx := context.Background()
	d1 := f.item(t, f.d1.ID, "")
	if res, err := f.q.Retry(ctx, d1); err != nil || !res.Done {
		t.Fatalf("retry: %+v %v", res, err)
	}
	retried := f.waitState(t, f.d1.ID, "", queue.StateReady, queue.SubjReady)
	if retried.Env.Retried.IsZero() || retried.Env.Attempt != 1 {
		t.Fatalf("retried entry: Retried %v, %d attempts (want marked, 1 attempt)", retried.Env.Retried, retried.Env.Attempt)
	}
	if _, err := f.q.Retry(ctx, d1); !errors.Is(err, queue.ErrChanged) {
		t.Fatalf("retry of a stale schedule: %v, want ErrChanged", err)
	}

	if _, err := f.q.Hold(ctx, f.item(t, f.inflight.ID, "")); !errors.Is(err, queue.ErrInFlight) {
		t.Fatalf("hold in-flight: %v, want ErrInFlight", err)
	}
	ready := f.item(t, f.readyMsg.ID, "")
	if res, err := f.q.Hold(ctx, ready); err != nil || !res.Done || res.Note != "" {
		t.Fatalf("hold ready: %+v %v", res, err)
	}
	held := f.item(t, f.readyMsg.ID, "")
	wantSubj := queue.Subject(queue.SubjHeld, f.readyMsg.ID, "two.example")
	if held.State != queue.StateHeld || !held.Env.Held || held.Subject != wantSubj {
		t.Fatalf("held item %+v", held)
	}
	if _, err := f.q.Hold(ctx, ready); !errors.Is(err, queue.ErrChanged) {
		t.Fatalf("hold of a stale ready copy: %v, want ErrChanged", err)
	}
	if res, err := f.q.Hold(ctx, f.item(t, f.d1b.ID, "")); err != nil || !res.Done {
		t.Fatalf("hold deferred: %+v %v", res, err)
	}
	heldD := f.waitState(t, f.d1b.ID, "", queue.StateHeld, queue.SubjHeld)
	if heldD.Subject != queue.Subject(queue.SubjHeld, f.d1b.ID, "one.example") || heldD.Env.Attempt != 1 {
		t.Fatalf("held deferred entry %+v", heldD)
	}
	if _, err := f.q.Retry(ctx, heldD); !errors.Is(err, queue.ErrHeldEntry) {
		t.Fatalf("retry held: %v", err)
	}

	for _, id := range []string{f.readyMsg.ID, f.d1b.ID} {
		if res, err := f.q.Release(ctx, f.item(t, id, "")); err != nil || !res.Done {
			t.Fatalf("release %s: %+v %v", id, res, err)
		}
		it := f.item(t, id, "")
		if it.State != queue.StateReady || it.Env.Held {
			t.Fatalf("released %s: %+v", id, it)
		}
	}
	if _, err := f.q.Release(ctx, f.item(t, f.multi.ID, "two.example")); !errors.Is(err, queue.ErrNotHeld) {
		t.Fatalf("release of a ready entry: %v", err)
	}
}

type fakeBouncer struct {
	mu    sync.Mutex
	calls []string
}

func (b *fakeBouncer) Deleted(_ context.Context, env *queue.Envelope, body []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls = append(b.calls, env.ID+"/"+env.Domain+":"+string(body))
	return nil
}

func TestOpsDelete(t *testing.T) {
	t.Parallel()
	f := newOpsFixture(t)
	ctx := context.Background()
	b := &fakeBouncer{}
	if _, err := f.q.Delete(ctx, f.item(t, f.inflight.ID, ""), b); !errors.Is(err, queue.ErrInFlight) {
		t.Fatalf("delete in-flight: %v", err)
	}
	one := f.item(t, f.multi.ID, "one.example")
	if res, err := f.q.Delete(ctx, one, b); err != nil || !res.Done {
		t.Fatalf("delete: %+v %v", res, err)
	}
	if _, err := f.q.Delete(ctx, one, b); !errors.Is(err, queue.ErrChanged) {
		t.Fatalf("second delete: %v, want ErrChanged", err)
	}
	bodies := func() int {
		return len(queuetest.StreamInfo(t, f.q, queue.SubjBody+"."+f.multi.ID+".>").State.Subjects)
	}
	if bodies() == 0 {
		t.Fatal("body reclaimed while an entry still refers to it")
	}
	if _, err := f.q.Delete(ctx, f.item(t, f.multi.ID, "two.example"), nil); err != nil {
		t.Fatal(err)
	}
	if n := bodies(); n != 0 {
		t.Fatalf("%d body chunks left after the last entry was deleted", n)
	}
	if _, err := f.q.Delete(ctx, f.item(t, f.d1.ID, ""), b); err != nil {
		t.Fatal(err)
	}
	want := []string{f.multi.ID + "/one.example:multi\r\n", f.d1.ID + "/one.example:d1\r\n"}
	if len(b.calls) != 2 || b.calls[0] != want[0] || b.calls[1] != want[1] {
		t.Fatalf("bouncer calls %q, want %q", b.calls, want)
	}
	if items, _ := f.q.List(ctx, queue.ListOptions{}); len(items) != 3 {
		t.Fatalf("%d entries left, want 3", len(items))
	}
}
