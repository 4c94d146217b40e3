package queue_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/nats-io/nats.go"
)

const parkDom = "park.example"

// parkAll enqueues n messages to parkDom, leases them and parks each one:
// the first `past` of them due already, the rest in two hours. It returns
// their ids in the order they were parked: the lease's order, which is the
// order of enqueueing unless an entry was redelivered (under heavy load an
// entry pulled for an iterator that restarted its pull comes back after
// AckWait, behind the others).
func parkAll(t *testing.T, q *queue.Queue, n, past int) []string {
	t.Helper()
	ctx := context.Background()
	for i := range n {
		enqueue(t, q, fmt.Sprintf("body %d\r\n", i), env(parkDom, fmt.Sprintf("u%d@%s", i, parkDom)))
	}
	es, err := q.Lease(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer es.Stop()
	now := time.Now()
	var ids []string
	for i := range n {
		e := nextEnv(t, es)
		next := *e.Env
		next.Attempt++
		due := now.Add(2 * time.Hour)
		if i < past {
			due = now.Add(-2 * queue.ParkGrain) // rounded up to a grain: still past
		}
		if err := e.Park(ctx, &next, due, now.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, e.Env.ID)
	}
	return ids
}

// nextEnv leases the next entry, acknowledging wake-ups on the way (an
// entry parked with a due time already past brings its domain's wake-up
// forward to now).
func nextEnv(t *testing.T, es *queue.Entries) *queue.Entry {
	t.Helper()
	for {
		e := nextEntry(t, es)
		if e.Wake == nil {
			return e
		}
		if err := e.Done(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

func subjects(t *testing.T, q *queue.Queue, filter string) map[string]uint64 {
	t.Helper()
	return queuetest.StreamInfo(t, q, filter).State.Subjects
}

func total(m map[string]uint64) (n int) {
	for _, c := range m {
		n += int(c)
	}
	return n
}

// Parked entries share a few subjects per domain and one wake-up, are
// visible to operators as deferred, and come back as probes: the due ones
// whatever the budget, then as many more as asked, oldest first.
func TestParkAndUnpark(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	q := queuetest.RunJetStream(t)
	const n = 12
	ids := parkAll(t, q, n, 2)

	parked := subjects(t, q, queue.SubjParked+".>")
	if total(parked) != n || len(parked) > 2 {
		t.Fatalf("%d parked entries on %d subjects, want %d on at most 2: %v", total(parked), len(parked), n, parked)
	}
	if got := total(subjects(t, q, queue.SubjScheduled+".>")); got != 0 {
		t.Fatalf("%d per-entry schedules, want none", got)
	}
	// The domain has one wake-up: still a schedule, or (when the past-due
	// entries brought it forward and it fired meanwhile) waiting in jr.q.
	scheduled := total(subjects(t, q, queue.SubjWake+".>"))
	fired := total(subjects(t, q, queue.Subject(queue.SubjReady, queue.WakeID, parkDom)))
	if scheduled != 1 && fired == 0 {
		t.Fatalf("%d wake-up schedules and %d fired wake-ups, want the domain woken", scheduled, fired)
	}
	items, err := q.List(ctx, queue.ListOptions{Domain: parkDom})
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != n {
		t.Fatalf("list: %d items, want %d", len(items), n)
	}
	for _, it := range items {
		if it.State != queue.StateDeferred || !it.Parked || it.Env.Attempt != 1 {
			t.Fatalf("parked item: state %s parked %v attempt %d", it.State, it.Parked, it.Env.Attempt)
		}
	}
	if byID, err := q.List(ctx, queue.ListOptions{ID: ids[5]}); err != nil || len(byID) != 1 || byID[0].Env.ID != ids[5] {
		t.Fatalf("list by id of a parked entry: %v %v", byID, err)
	}
	counts, err := q.Counts(ctx)
	if err != nil || len(counts) != 1 || counts[0].Counts[queue.StateDeferred] != n {
		t.Fatalf("counts: %+v %v", counts, err)
	}
	stats, err := q.Stats(ctx)
	if err != nil || stats[queue.StateDeferred].Count != n {
		t.Fatalf("stats: %+v %v", stats, err)
	}

	// Due entries move whatever the budget, then one probe.
	now := time.Now()
	res, err := q.Unpark(ctx, queue.UnparkOptions{Domain: parkDom, Now: now, Extra: 1, MarkProbe: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Moved != 3 || res.Left != n-3 || !res.More {
		t.Fatalf("unpark: %+v, want 3 moved, %d left, more", res, n-3)
	}
	want := time.Unix(now.Add(2*time.Hour).Unix(), 0)
	if res.NextDue.Before(want) || res.NextDue.After(want.Add(queue.ParkGrain)) {
		t.Fatalf("next due %s, want within a grain after %s", res.NextDue, want)
	}
	es, err := q.Lease(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer es.Stop()
	var got []string
	for range 3 {
		e := nextEnv(t, es)
		body, err := e.Body(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !e.Env.Probe || !e.Env.NextAt.IsZero() || e.Env.Attempt != 1 || len(body) == 0 {
			t.Fatalf("unparked entry: probe %v next %s attempt %d body %q", e.Env.Probe, e.Env.NextAt, e.Env.Attempt, body)
		}
		got = append(got, e.Env.ID)
		if err := e.Done(ctx); err != nil {
			t.Fatal(err)
		}
	}
	slices.Sort(got)
	if want := slices.Sorted(slices.Values(ids[:3])); !slices.Equal(got, want) {
		t.Fatalf("unparked %v, want the two due and the oldest other %v", got, want)
	}

	// A crashed unparker published a copy but did not remove the parked
	// one: unparking again is deduplicated, so exactly one copy is ready.
	first := items[0]
	for _, it := range items {
		if it.Env.ID == ids[3] {
			first = it
		}
	}
	crashed := &nats.Msg{
		Subject: queue.Subject(queue.SubjReady, first.Env.ID, parkDom), Header: nats.Header{}, Data: []byte("copy\r\n"),
	}
	envJSON, _ := first.Env.Marshal()
	crashed.Header.Set(queue.HeaderEnv, string(envJSON))
	crashed.Header.Set("Nats-Msg-Id", "u"+strconv.FormatUint(first.Seq, 10))
	if _, err := q.JetStream().PublishMsg(ctx, crashed); err != nil {
		t.Fatal(err)
	}
	res, err = q.Unpark(ctx, queue.UnparkOptions{Domain: parkDom, Now: time.Now(), Extra: 100})
	if err != nil || res.Moved != n-3 || res.Left != 0 || res.More {
		t.Fatalf("unpark all: %+v %v", res, err)
	}
	ready := subjects(t, q, queue.SubjReady+".*."+parkDom)
	delete(ready, queue.Subject(queue.SubjReady, queue.WakeID, parkDom)) // fired for the past-due entries
	if len(ready) != n-3 || ready[queue.Subject(queue.SubjReady, first.Env.ID, parkDom)] != 1 {
		t.Fatalf("ready after unparking all: %v (want %d subjects of one entry each)", ready, n-3)
	}
	if left := total(subjects(t, q, queue.SubjParked+".>")); left != 0 {
		t.Fatalf("%d still parked", left)
	}
}

// An "all" wake-up moves only what was parked before it: entries parked
// again afterwards (the destination failed again) wait for a probe.
func TestUnparkUpTo(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	q := queuetest.RunJetStream(t)
	parkAll(t, q, 4, 0)
	upTo, err := q.ParkedLastSeq(ctx)
	if err != nil {
		t.Fatal(err)
	}
	parkAll(t, q, 3, 0)
	res, err := q.Unpark(ctx, queue.UnparkOptions{Domain: parkDom, Now: time.Now(), Extra: 100, UpTo: upTo})
	if err != nil || res.Moved != 4 || res.Left != 3 || res.More {
		t.Fatalf("unpark up to %d: %+v %v, want 4 moved and 3 left", upTo, res, err)
	}
	res, err = q.Unpark(ctx, queue.UnparkOptions{Domain: parkDom, Now: time.Now(), Extra: 2, UpTo: upTo})
	if err != nil || res.Moved != 0 || res.Left != 3 {
		t.Fatalf("nothing is left up to %d: %+v %v", upTo, res, err)
	}
}

// A domain's wake-up: created once (a second Park does not postpone it),
// fired into the delivery consumer as a Wake, replaced by ScheduleWake, and
// repaired by EnsureWakes when it is missing.
func TestWakeUps(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	q := queuetest.RunJetStream(t)
	parkAll(t, q, 2, 0)
	s, err := q.Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w1, err := s.GetLastMsgForSubject(ctx, queue.SubjWake+"."+parkDom)
	if err != nil {
		t.Fatal(err)
	}
	if created, err := q.EnsureWake(ctx, parkDom, time.Now()); err != nil || created {
		t.Fatalf("EnsureWake with one scheduled: created %v, %v", created, err)
	}
	if w2, err := s.GetLastMsgForSubject(ctx, queue.SubjWake+"."+parkDom); err != nil || w2.Sequence != w1.Sequence {
		t.Fatalf("EnsureWake replaced the scheduled wake-up (%d -> %v, %v)", w1.Sequence, w2, err)
	}
	if made, err := q.EnsureWakes(ctx, time.Now()); err != nil || len(made) != 0 {
		t.Fatalf("EnsureWakes with a wake-up scheduled: %v %v", made, err)
	}
	// An entry due before the scheduled wake-up brings it forward.
	enqueue(t, q, "soon\r\n", env(parkDom, "soon@"+parkDom))
	es0, err := q.Lease(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	e0 := nextEnv(t, es0)
	es0.Stop()
	due := time.Now().Add(40 * time.Minute)
	if err := e0.Park(ctx, e0.Env, due, time.Now().Add(3*time.Hour)); err != nil {
		t.Fatal(err)
	}
	w3, err := s.GetLastMsgForSubject(ctx, queue.SubjWake+"."+parkDom)
	if err != nil {
		t.Fatal(err)
	}
	at, err := time.Parse(time.RFC3339, strings.TrimPrefix(w3.Header.Get("Nats-Schedule"), "@at "))
	if err != nil || at.Before(due.Add(-time.Second)) || at.After(due.Add(queue.ParkGrain)) {
		t.Fatalf("wake-up at %s (%v), want the entry's due %s rounded up to %s", at, err, due, queue.ParkGrain)
	}
	// Due now: it fires into jr.q and is leased as a Wake.
	if err := q.ScheduleWake(ctx, queue.Wake{Domain: parkDom, All: true, UpTo: 7}, time.Now()); err != nil {
		t.Fatal(err)
	}
	es, err := q.Lease(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer es.Stop()
	e := nextEntry(t, es)
	if e.Wake == nil || e.Env != nil || e.Wake.Domain != parkDom || !e.Wake.All || e.Wake.UpTo != 7 {
		t.Fatalf("leased %+v (wake %+v), want the all wake-up of %s", e, e.Wake, parkDom)
	}
	// While it is leased, EnsureWakes leaves the domain alone.
	if made, err := q.EnsureWakes(ctx, time.Now().Add(time.Hour)); err != nil || len(made) != 0 {
		t.Fatalf("EnsureWakes while a wake-up is leased: %v %v", made, err)
	}
	if err := e.Done(ctx); err != nil {
		t.Fatal(err)
	}
	if got := total(subjects(t, q, queue.SubjReady+".>")) + total(subjects(t, q, queue.SubjWake+".>")); got != 0 {
		t.Fatalf("%d wake-up messages left after the ack", got)
	}
	// Parked entries and no wake-up (a crash, an operator): repaired.
	made, err := q.EnsureWakes(ctx, time.Now().Add(time.Hour))
	if err != nil || !slices.Equal(made, []string{parkDom}) {
		t.Fatalf("EnsureWakes: %v %v, want [%s]", made, err, parkDom)
	}
	if _, err := s.GetLastMsgForSubject(ctx, queue.SubjWake+"."+parkDom); err != nil {
		t.Fatalf("no wake-up after the repair: %v", err)
	}
}

// Operators act on parked entries like on deferred ones: retry makes one
// due now (as a probe), hold moves it to held, delete removes it; an
// action on a copy that moved meanwhile fails with ErrChanged.
func TestOpsOnParkedEntries(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	q := queuetest.RunJetStream(t)
	ids := parkAll(t, q, 3, 0)
	item := func(id string) *queue.Item {
		items, err := q.List(ctx, queue.ListOptions{ID: id})
		if err != nil || len(items) != 1 {
			t.Fatalf("list %s: %v %v", id, items, err)
		}
		return items[0]
	}
	it := item(ids[0])
	if res, err := q.Retry(ctx, it); err != nil || !res.Done {
		t.Fatalf("retry: %+v %v", res, err)
	}
	if got := item(ids[0]); got.State != queue.StateReady || !got.Env.Probe || got.Env.Retried.IsZero() ||
		got.Env.Attempt != it.Env.Attempt {
		t.Fatalf("after retry: %s probe %v retried %v attempts %d (was %d)", got.State, got.Env.Probe,
			got.Env.Retried, got.Env.Attempt, it.Env.Attempt)
	}
	if _, err := q.Retry(ctx, it); err != queue.ErrChanged {
		t.Fatalf("retry of the stale parked copy: %v, want ErrChanged", err)
	}
	if res, err := q.Hold(ctx, item(ids[1])); err != nil || !res.Done {
		t.Fatalf("hold: %+v %v", res, err)
	}
	if got := item(ids[1]); got.State != queue.StateHeld || got.Parked {
		t.Fatalf("after hold: %s parked %v", got.State, got.Parked)
	}
	if res, err := q.Delete(ctx, item(ids[2]), nil); err != nil || !res.Done {
		t.Fatalf("delete: %+v %v", res, err)
	}
	if left := total(subjects(t, q, queue.SubjParked+".>")); left != 0 {
		t.Fatalf("%d still parked", left)
	}
}

// An operator's jetrelay talking to a NATS whose park stream does not
// exist (set up by an older jetrelay) lists, counts and samples the rest.
func TestOpsWithoutParkStream(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	q := queuetest.RunJetStream(t)
	enqueue(t, q, "ready\r\n", env("two.example", "z@two.example"))
	if err := q.JetStream().DeleteStream(ctx, queue.ParkStreamName); err != nil {
		t.Fatal(err)
	}
	if items, err := q.List(ctx, queue.ListOptions{}); err != nil || len(items) != 1 {
		t.Fatalf("list: %d items, %v", len(items), err)
	}
	if counts, err := q.Counts(ctx); err != nil || len(counts) != 1 || counts[0].Counts[queue.StateReady] != 1 {
		t.Fatalf("counts: %+v %v", counts, err)
	}
	if stats, err := q.Stats(ctx); err != nil || stats[queue.StateDeferred].Count != 0 {
		t.Fatalf("stats: %+v %v", stats, err)
	}
	if d, err := q.ParkedDomains(ctx); err != nil || len(d) != 0 {
		t.Fatalf("parked domains: %v %v", d, err)
	}
}
