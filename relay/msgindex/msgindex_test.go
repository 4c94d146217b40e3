package msgindex

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/jetrelay/jetrelay/relay/events"
)

func TestSummaryFollowsMessage(t *testing.T) {
	t.Parallel()
	v := newEnv(t, Options{})
	v.run(v.x)
	id, now := queue.NewID(), time.Now().UTC()
	v.publish(accepted(id, now, "app@example.com", 1))
	s := v.waitFor(id, "queued", func(s Summary) bool { return s.Status == StatusQueued })
	if s.From != "app@example.com" || s.MsgID != "<"+id+"@test>" || s.User != "app" || s.Size != 1234 {
		t.Fatalf("accepted summary: %+v", s)
	}
	v.publish(delivery(id, "u@dest.test", events.StatusDeferred, now.Add(time.Second), 1))
	s = v.waitFor(id, "deferred", func(s Summary) bool { return s.Status == StatusDeferred })
	if len(s.Rcpts) != 1 || s.Rcpts[0].Code != 451 || s.Rcpts[0].Reply != "try later" {
		t.Fatalf("deferred summary: %+v", s)
	}
	v.publish(delivery(id, "u@dest.test", events.StatusDelivered, now.Add(2*time.Second), 2))
	s = v.waitFor(id, "delivered", func(s Summary) bool { return s.Status == StatusDelivered })
	if r := s.Rcpts[0]; r.Code != 250 || r.Attempt != 2 || !s.Updated.Equal(now.Add(2*time.Second)) {
		t.Fatalf("delivered summary: %+v", s)
	}
	if _, err := v.x.Get(context.Background(), queue.NewID()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of an unknown id: %v, want ErrNotFound", err)
	}
}

func TestRecipientStates(t *testing.T) {
	t.Parallel()
	v := newEnv(t, Options{})
	v.run(v.x)
	id, now := queue.NewID(), time.Now().UTC()
	v.publish(accepted(id, now, "app@example.com", 3),
		delivery(id, "a@one.test", events.StatusDelivered, now, 1),
		delivery(id, "b@two.test", events.StatusFailed, now, 1))
	s := v.waitFor(id, "two recipients", func(s Summary) bool { return len(s.Rcpts) == 2 })
	if s.Status != StatusMixed { // the third recipient is still queued
		t.Fatalf("status %q, want mixed", s.Status)
	}
	v.publish(delivery(id, "c@two.test", events.StatusFailed, now, 1),
		&events.Event{Time: now, Event: events.DSN, QueueID: id, DSNID: "DSNID", Rcpt: "app@example.com",
			Status: "queued", Reason: "failed"},
		&events.Event{Time: now.Add(time.Minute), Event: events.Bounced, QueueID: id, Rcpt: "A@ONE.TEST",
			Status: events.StatusFailed, SMTPEnh: "5.1.1", Reply: "gone"})
	s = v.waitFor(id, "bounce and DSN", func(s Summary) bool { return s.DSNID != "" && s.Rcpts[0].Status == StatusBounced })
	want := map[string]string{"a@one.test": StatusBounced, "b@two.test": StatusFailed, "c@two.test": StatusFailed}
	for _, r := range s.Rcpts {
		if want[r.Addr] != r.Status {
			t.Errorf("rcpt %s: %s, want %s", r.Addr, r.Status, want[r.Addr])
		}
	}
	if s.Status != StatusMixed || s.DSNID != "DSNID" || s.From != "app@example.com" {
		t.Fatalf("summary: %+v", s)
	}
	if p := v.search(Query{Status: StatusBounced}); len(p.Items) != 1 {
		t.Logf("all: %+v", v.search(Query{}))
		t.Fatalf("status bounced found %d, want the mixed message", len(p.Items))
	}
	v.publish(&events.Event{Time: now.Add(2 * time.Minute), Event: events.Held, QueueID: id},
		&events.Event{Time: now.Add(3 * time.Minute), Event: events.Deleted, QueueID: id})
	v.waitFor(id, "deleted", func(s Summary) bool { return s.Status == StatusDeleted })
}

func TestFoldIsOrderFreeAndIdempotent(t *testing.T) {
	t.Parallel()
	id, now := queue.NewID(), time.Now().UTC()
	evs := []*events.Event{accepted(id, now, "s@x.test", 2),
		delivery(id, "a@y.test", events.StatusDeferred, now.Add(time.Second), 1),
		delivery(id, "b@y.test", events.StatusDeferred, now.Add(time.Second), 1),
		delivery(id, "a@y.test", events.StatusDelivered, now.Add(2*time.Second), 2),
		{Time: now.Add(3 * time.Second), Event: events.Held, QueueID: id},
		{Time: now.Add(4 * time.Second), Event: events.Released, QueueID: id},
		delivery(id, "b@y.test", events.StatusFailed, now.Add(5*time.Second), 2)}
	if b, _ := encode(&record{Summary: Summary{QueueID: id}}); storedID(b) != id {
		t.Fatalf("storedID(%s) = %q", b, storedID(b))
	}
	fold := func(order []int) []byte {
		r := &record{Summary: Summary{QueueID: id}}
		for _, i := range order {
			r.fold(uint64(i+1), evs[i])
		}
		slices.SortFunc(r.Rcpts, func(a, b RcptState) int { return strings.Compare(a.Addr, b.Addr) })
		r.RcptSeq = nil
		b, _ := encode(r)
		return b
	}
	inOrder := []int{0, 1, 2, 3, 4, 5, 6}
	want := fold(inOrder)
	rng := rand.New(rand.NewPCG(1, 2))
	for n := range 50 {
		order := slices.Clone(inOrder)
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		order = append(order, order[:n%len(order)]...) // some twice
		if got := fold(order); string(got) != string(want) {
			t.Fatalf("order %v:\n got %s\nwant %s", order, got, want)
		}
	}
	if !strings.Contains(string(want), `"status":"mixed"`) {
		t.Fatalf("final record %s: want status mixed (a delivered, b failed)", want)
	}
}

func TestSearchFields(t *testing.T) {
	t.Parallel()
	v := newEnv(t, Options{})
	v.run(v.x)
	now := time.Now().UTC()
	rng := rand.New(rand.NewPCG(3, 4))
	a := idAt(now.Add(-3*time.Hour), rng)
	b := idAt(now.Add(-2*time.Hour), rng)
	c := idAt(now.Add(-time.Minute), rng)
	ea := accepted(a, now.Add(-3*time.Hour), "Billing@Shop.test", 1)
	ea.Meta, ea.Tag, ea.MsgID = map[string]string{"campaign": "spring", "customer": "42"}, "promo", "<Order-1@shop.test>"
	eb := accepted(b, now.Add(-2*time.Hour), "alerts@ops.test", 1)
	eb.User, eb.Meta = "monitor", map[string]string{"campaign": "autumn"}
	v.publish(ea, eb, accepted(c, now.Add(-time.Minute), "billing@shop.test", 1),
		delivery(a, "Ann@Gmail.test", events.StatusDelivered, now, 1),
		delivery(b, "bob@corp.test", events.StatusFailed, now, 1),
		delivery(c, "carl@gmail.test", events.StatusDeferred, now, 1))
	v.waitFor(c, "indexed", func(s Summary) bool { return s.Status == StatusDeferred })
	v.waitFor(b, "indexed", func(s Summary) bool { return s.Status == StatusFailed })
	v.waitFor(a, "indexed", func(s Summary) bool { return s.Status == StatusDelivered })
	cases := []struct {
		name string
		q    Query
		want []string
	}{
		{"all newest first", Query{}, []string{c, b, a}},
		{"rcpt address any case", Query{Rcpt: "ann@gmail.TEST"}, []string{a}},
		{"rcpt domain with @", Query{Rcpt: "@gmail.test"}, []string{c, a}},
		{"rcpt bare domain", Query{Rcpt: "corp.test"}, []string{b}},
		{"rcpt domain is not a suffix match", Query{Rcpt: "mail.test"}, nil},
		{"sender", Query{From: "billing@shop.test"}, []string{c, a}},
		{"sender domain", Query{From: "ops.test"}, []string{b}},
		{"queue id lower case", Query{QueueID: strings.ToLower(b)}, []string{b}},
		{"message-id without brackets", Query{MsgID: "order-1@SHOP.test"}, []string{a}},
		{"meta", Query{Meta: map[string]string{"campaign": "spring"}}, []string{a}},
		{"meta all keys", Query{Meta: map[string]string{"campaign": "spring", "customer": "7"}}, nil},
		{"failed (postings)", Query{Status: StatusFailed}, []string{b}},
		{"deferred (postings)", Query{Status: StatusDeferred}, []string{c}},
		{"delivered (scan)", Query{Status: StatusDelivered}, []string{a}},
		{"status and domain", Query{Status: StatusDelivered, Rcpt: "gmail.test"}, []string{a}},
		{"user", Query{User: "monitor"}, []string{b}},
		{"since", Query{Since: now.Add(-150 * time.Minute)}, []string{c, b}},
		{"until", Query{Until: now.Add(-150 * time.Minute)}, []string{a}},
		{"limit", Query{Limit: 2}, []string{c, b}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := v.search(tc.q)
			var got []string
			for _, s := range p.Items {
				got = append(got, s.QueueID)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestBadQuery(t *testing.T) {
	t.Parallel()
	v := newEnv(t, Options{})
	for _, q := range []Query{{Cursor: "bogus"}, {Cursor: cursor("not-an-id")}, {Status: "sent"}} {
		if _, err := v.x.Search(context.Background(), q); !errors.Is(err, ErrBadQuery) {
			t.Errorf("Search(%+v): %v, want ErrBadQuery", q, err)
		}
	}
}

func TestPaginationStableWhileEventsArrive(t *testing.T) {
	t.Parallel()
	v := newEnv(t, Options{})
	v.run(v.x)
	now := time.Now().UTC()
	rng := rand.New(rand.NewPCG(5, 6))
	var ids []string
	for i := range 130 {
		id := idAt(now.Add(-time.Duration(i)*2*time.Minute), rng) // spans several hours
		ids = append(ids, id)
		v.publish(accepted(id, now, "s@x.test", 1), delivery(id, "r@y.test", events.StatusDeferred, now, 1))
	}
	v.waitFor(ids[len(ids)-1], "last indexed", func(s Summary) bool { return s.Status == StatusDeferred })
	queuetest.Eventually(t, 30*time.Second, "all indexed", func() bool { return len(v.search(Query{Limit: 500}).Items) == 130 })
	// The first runs on the messages as they are; later ones exclude the
	// new mail of earlier runs with Until.
	until := now.Add(time.Millisecond)
	for _, tc := range []struct {
		name string
		q    Query
	}{
		{"all", Query{Limit: 50}},
		{"domain", Query{Limit: 50, Rcpt: "@y.test", Until: until}},
		{"address since", Query{Limit: 40, Rcpt: "r@y.test", Since: now.Add(-5 * time.Hour), Until: until}},
	} {
		t.Run(tc.name, func(t *testing.T) { pageThrough(t, v, tc.q, ids) })
	}
}

// pageThrough pages through q while new mail arrives and messages on
// later pages change, and expects want, in order.
func pageThrough(t *testing.T, v *env, q Query, want []string) {
	var seen []string
	for page := 0; ; page++ {
		p := v.search(q)
		for _, s := range p.Items {
			seen = append(seen, s.QueueID)
		}
		// between pages: new mail and updates of messages on later pages
		fresh := queue.NewID()
		v.publish(accepted(fresh, time.Now(), "s@x.test", 1), delivery(fresh, "r@y.test", events.StatusDeferred, time.Now(), 1),
			delivery(want[min(len(want)-1, (page+1)*q.Limit+3)], "r@y.test", events.StatusDelivered, time.Now(), 2))
		if p.Next == "" {
			break
		}
		q.Cursor = p.Next
	}
	if !q.Since.IsZero() {
		want = slices.DeleteFunc(slices.Clone(want), func(id string) bool { at, _ := idTime(id); return at.Before(q.Since) })
	}
	if !slices.Equal(seen, want) {
		t.Fatalf("paged through %d ids, want the %d in descending order", len(seen), len(want))
	}
}

func TestTwoIndexersConverge(t *testing.T) {
	t.Parallel()
	v := newEnv(t, Options{})
	other, err := Open(context.Background(), v.js, Options{})
	if err != nil {
		t.Fatal(err)
	}
	v.run(v.x)
	v.run(other)
	now := time.Now().UTC()
	const msgs, rcpts = 10, 30
	ids := make([]string, msgs)
	for i := range ids {
		ids[i] = queue.NewID()
		v.publish(accepted(ids[i], now, "s@x.test", rcpts))
	}
	for r := range rcpts { // interleaved: both indexers update the same summaries at once
		for _, id := range ids {
			v.publish(delivery(id, fmt.Sprintf("r%d@y.test", r), events.StatusDeferred, now, 1))
		}
		for _, id := range ids {
			v.publish(delivery(id, fmt.Sprintf("r%d@y.test", r), events.StatusDelivered, now.Add(time.Second), 2))
		}
	}
	for _, id := range ids {
		s := v.waitFor(id, "all recipients delivered", func(s Summary) bool { return s.Status == StatusDelivered })
		if len(s.Rcpts) != rcpts || s.From != "s@x.test" {
			t.Fatalf("summary of %s: %d rcpts, from %q", id, len(s.Rcpts), s.From)
		}
	}
}

func TestRetention(t *testing.T) {
	t.Parallel()
	v := newEnv(t, Options{Retention: 2 * time.Second})
	v.run(v.x)
	id := queue.NewID()
	v.publish(accepted(id, time.Now(), "s@x.test", 1))
	v.waitFor(id, "indexed", func(Summary) bool { return true })
	queuetest.Eventually(t, 30*time.Second, "summary expired", func() bool {
		_, err := v.x.Get(context.Background(), id)
		return errors.Is(err, ErrNotFound)
	})
	if p := v.search(Query{}); len(p.Items) != 0 {
		t.Fatalf("search after expiry found %d", len(p.Items))
	}
}

func TestHistory(t *testing.T) {
	t.Parallel()
	v := newEnv(t, Options{})
	id, other, now := queue.NewID(), queue.NewID(), time.Now().UTC()
	v.publish(accepted(id, now, "s@x.test", 1), accepted(other, now, "s@x.test", 1),
		delivery(id, "r@y.test", events.StatusDeferred, now, 1),
		delivery(id, "r@y.test", events.StatusDelivered, now, 2))
	h, err := History(context.Background(), v.js, id)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, r := range h {
		kinds = append(kinds, r.Event.Event+":"+r.Event.Status)
	}
	if want := []string{"accepted:", "delivery:deferred", "delivery:delivered"}; !slices.Equal(kinds, want) {
		t.Fatalf("history %v, want %v", kinds, want)
	}
}

func TestGetManyBatchedAndOneByOne(t *testing.T) {
	t.Parallel()
	v := newEnv(t, Options{})
	v.run(v.x)
	now := time.Now().UTC()
	ids := []string{queue.NewID(), queue.NewID(), queue.NewID()}
	v.publish(accepted(ids[0], now, "a@x.test", 1), accepted(ids[2], now, "c@x.test", 1))
	v.waitFor(ids[2], "indexed", func(Summary) bool { return true })
	v.waitFor(ids[0], "indexed", func(Summary) bool { return true })
	want := []string{"a@x.test", "", "c@x.test"} // the middle one was never indexed
	for name, get := range map[string]func(context.Context, []string) ([]Summary, error){
		"batched": v.x.multiGet, "one by one": v.x.getEach,
	} {
		got, err := get(context.Background(), ids)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for i, s := range got {
			if s.From != want[i] {
				t.Errorf("%s: item %d from %q, want %q", name, i, s.From, want[i])
			}
		}
	}
}

func TestLargeSummaryFits(t *testing.T) {
	t.Parallel()
	id, now := queue.NewID(), time.Now().UTC()
	r := &record{Summary: Summary{QueueID: id}}
	acc := accepted(id, now, "s@x.test", 3000)
	acc.Meta = map[string]string{"k": strings.Repeat("v", 2000)}
	r.fold(1, acc)
	for i := range 3000 {
		e := delivery(id, fmt.Sprintf("recipient-%d@some-long-domain-name.test", i), events.StatusFailed, now, 1)
		e.Reply = strings.Repeat("x", 400)
		r.fold(uint64(i+2), e)
	}
	bound(r)
	data, err := encodeFit(r)
	r.fold(5000, delivery(id, "late@x.test", events.StatusFailed, now, 2)) // after the cut: still failed
	if err != nil || len(data) > maxRecord || len(r.Rcpts) == 0 || r.Status != StatusFailed {
		t.Fatalf("encodeFit: %d bytes, %d rcpts, status %s, %v", len(data), len(r.Rcpts), r.Status, err)
	}
}

// TestEventsStreamCreatedAgain: after the events stream is created again
// (a migration copies the events with new sequences), the indexer starts
// over and new events update summaries whose sequences came from the old
// stream.
func TestEventsStreamCreatedAgain(t *testing.T) {
	t.Parallel()
	v := newEnv(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	first := make(chan error, 1)
	go func() { first <- v.x.Run(ctx) }()
	id, now := queue.NewID(), time.Now().UTC()
	v.publish(accepted(id, now, "s@x.test", 1), delivery(id, "r@y.test", events.StatusDeferred, now, 1))
	v.waitFor(id, "deferred", func(s Summary) bool { return s.Status == StatusDeferred })
	if err := v.js.DeleteStream(ctx, events.StreamName); err != nil {
		t.Fatal(err)
	}
	if _, err := events.EnsureStream(ctx, v.js, events.StreamOptions{MaxAge: 24 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-first:
		if err == nil {
			t.Fatal("Run returned nil after its consumer was deleted")
		}
	case <-time.After(time.Minute):
		t.Fatal("Run did not return after its consumer was deleted")
	}
	// the same sequences (1, 2) as the summary recorded from the old stream
	v.publish(accepted(id, now, "s@x.test", 1), delivery(id, "r@y.test", events.StatusDelivered, now.Add(time.Second), 2))
	v.run(v.x)
	v.waitFor(id, "delivered", func(s Summary) bool { return s.Status == StatusDelivered })
}

// TestQueuedFoundByRecipient: the accepted event lists the recipients, so
// a held or not yet attempted message is found by recipient and domain;
// a later delivery event updates the same recipient (any case).
func TestQueuedFoundByRecipient(t *testing.T) {
	t.Parallel()
	v := newEnv(t, Options{})
	v.run(v.x)
	id, now := queue.NewID(), time.Now().UTC()
	acc := accepted(id, now, "app@example.com", 2)
	acc.Rcpts = []string{"Ann@Wait.test", "bob@other.test"}
	v.publish(acc)
	s := v.waitFor(id, "queued recipients", func(s Summary) bool { return len(s.Rcpts) == 2 })
	if s.Status != StatusQueued || s.Rcpts[0].Status != StatusQueued {
		t.Fatalf("summary before any attempt: %+v", s)
	}
	for _, q := range []Query{{Rcpt: "ann@wait.test"}, {Rcpt: "wait.test"}, {Rcpt: "bob@other.test", Status: StatusQueued}} {
		if p := v.search(q); len(p.Items) != 1 || p.Items[0].QueueID != id {
			t.Errorf("search %+v: %+v, want the queued message", q, p.Items)
		}
	}
	v.publish(delivery(id, "ann@wait.test", events.StatusDelivered, now.Add(time.Second), 1))
	s = v.waitFor(id, "one delivered", func(s Summary) bool { return s.Status == StatusMixed })
	if len(s.Rcpts) != 2 || s.Rcpts[0].Status != StatusDelivered || s.Rcpts[1].Status != StatusQueued {
		t.Fatalf("after one delivery: %+v", s.Rcpts)
	}
}

// TestLostCompareAndSetIsFoldedAgain: a summary written from a stale read
// (another node stored a newer one meanwhile) loses its compare-and-set;
// store reads it again and keeps both nodes' changes.
func TestLostCompareAndSetIsFoldedAgain(t *testing.T) {
	t.Parallel()
	v := newEnv(t, Options{})
	v.run(v.x)
	ctx := context.Background()
	now := time.Now().UTC()
	id := queue.NewID()
	v.publish(accepted(id, now, "s@x.test", 2))
	v.waitFor(id, "accepted", func(s Summary) bool { return s.Status == StatusQueued })
	stale, err := v.x.load(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	v.publish(delivery(id, "a@y.test", events.StatusDelivered, now, 1))
	v.waitFor(id, "a delivered", func(s Summary) bool { return len(s.Rcpts) == 1 })
	// This node's update, folded into the stale read: b failed.
	u := &update{id: id, seqs: []uint64{1 << 40}, evs: []*events.Event{delivery(id, "b@y.test", events.StatusFailed, now, 1)},
		st: stale}
	st, err := v.js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	u.epoch = st.CachedInfo().Created.UnixNano()
	p := prepare(u)
	v.x.writeAll(ctx, []*prepared{p})
	if !queue.IsConflict(p.err) {
		t.Fatalf("write from a stale read: %v, want a conflict", p.err)
	}
	if err := v.x.store(ctx, u); err != nil {
		t.Fatal(err)
	}
	s, err := v.x.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, r := range s.Rcpts {
		got[r.Addr] = r.Status
	}
	if got["a@y.test"] != StatusDelivered || got["b@y.test"] != StatusFailed || s.Status != StatusMixed {
		t.Fatalf("after the retry: %v, status %s; want a delivered, b failed, mixed", got, s.Status)
	}
	if p := v.search(Query{Rcpt: "b@y.test"}); len(p.Items) != 1 {
		t.Fatalf("search by b@y.test after the retry: %d items, want 1 (its term posted)", len(p.Items))
	}
}

// TestUnreadableSummaryIsWrittenAnew: a summary that does not decode (a
// damaged value) is replaced by the next event's fold instead of holding
// the message's events in redelivery for ever.
func TestUnreadableSummaryIsWrittenAnew(t *testing.T) {
	t.Parallel()
	v := newEnv(t, Options{})
	v.run(v.x)
	ctx := context.Background()
	now := time.Now().UTC()
	id := queue.NewID()
	k, _ := key(id)
	if _, err := v.x.kv.Put(ctx, k, []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	if _, err := v.x.Get(ctx, id); err == nil || errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of a damaged summary: %v, want an error other than not found", err)
	}
	if p := v.search(Query{QueueID: id}); len(p.Items) != 0 {
		t.Fatalf("search of a damaged summary: %d items, want none", len(p.Items))
	}
	v.publish(delivery(id, "a@y.test", events.StatusDelivered, now, 1))
	s := v.waitFor(id, "written anew", func(s Summary) bool { return s.Status == StatusDelivered })
	if s.QueueID != id || len(s.Rcpts) != 1 {
		t.Fatalf("summary written anew: %+v", s)
	}
}
