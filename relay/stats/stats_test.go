package stats_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/relaytest"
	"github.com/jetrelay/jetrelay/relay/stats"
	"github.com/rs/zerolog"
)

// env is an embedded JetStream with the events stream and a publisher.
type env struct {
	t   testing.TB
	q   *queue.Queue
	pub *events.StreamPublisher
}

func newEnv(t testing.TB) *env {
	t.Helper()
	q := queuetest.RunJetStream(t)
	ctx := context.Background()
	if _, err := events.EnsureStream(ctx, q.JetStream(), events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	pub, err := events.NewPublisher(events.PublisherOptions{Conn: q.Conn(), Logger: zerolog.New(zerolog.NewTestWriter(t))})
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pub.Close(context.Background()) })
	return &env{t: t, q: q, pub: pub}
}

// store opens a Store and runs its aggregator until the test ends.
func (e *env) store(o stats.Options) *stats.Store {
	e.t.Helper()
	if o.Interval == 0 {
		o.Interval = 20 * time.Millisecond
	}
	o.Log = zerolog.New(zerolog.NewTestWriter(e.t))
	s, err := stats.Open(context.Background(), e.q.JetStream(), o)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := s.Run(ctx); err != nil {
			e.t.Errorf("Run: %v", err)
		}
	}()
	e.t.Cleanup(func() { cancel(); wg.Wait() })
	return s
}

// settled reports whether the stats consumer has acknowledged everything.
func (e *env) settled() bool {
	c, err := e.q.JetStream().Consumer(context.Background(), events.StreamName, stats.ConsumerName)
	if err != nil {
		return false
	}
	info, err := c.Info(context.Background())
	return err == nil && info.NumPending == 0 && info.NumAckPending == 0
}

func totals(t testing.TB, s *stats.Store, q stats.Query) stats.Counts {
	t.Helper()
	c, err := s.Totals(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func delivery(user, rcpt, status string, code int) *events.Event {
	return &events.Event{Event: events.Delivery, User: user, QueueID: "Q" + rcpt, Rcpt: rcpt,
		Domain: rcpt[len("x@"):], Status: status, SMTPCode: code}
}

// TestCountsFromEvents: each kind counts where the package comment says,
// per user, per domain and per minute; what counts nothing is left out.
func TestCountsFromEvents(t *testing.T) {
	e := newEnv(t)
	s := e.store(stats.Options{})
	now := time.Now().UTC()
	for _, ev := range []*events.Event{
		{Event: events.Accepted, User: "shop", QueueID: "Q1", RcptCount: 3,
			Rcpts: []string{"a@gmail.com", "b@Example.ORG", "c@gmail.com"}}, // per domain: gmail 2, example.org 1
		{Event: events.Accepted, User: "news", QueueID: "Q2", RcptCount: 1}, // no list (older events): domain ""
		delivery("shop", "a@gmail.com", events.StatusDelivered, 250),
		delivery("shop", "b@example.org", events.StatusRelayed, 250),
		delivery("shop", "c@gmail.com", events.StatusFailed, 550),
		delivery("shop", "d@gmail.com", events.StatusFailed, 451), // retry.max_age: not a hard bounce
		delivery("shop", "e@gmail.com", events.StatusDeferred, 421),
		{Event: events.Delivery, User: "shop", Rcpt: "f@gmail.com", Domain: "gmail.com", Status: events.StatusDeferred,
			Reason: "not_attempted"},
		{Event: events.Bounced, User: "shop", Rcpt: "g@Example.ORG", Status: events.StatusFailed, SMTPEnh: "5.1.1"},
		{Event: events.Complaint, User: "shop", Rcpt: "h@gmail.com", FeedbackType: "abuse"},
		{Event: events.Complaint, User: "shop", Rcpt: "i@gmail.com", FeedbackType: "not-spam"},
		{Event: events.Rejected, User: "shop", Rcpt: "j@gmail.com", SMTPCode: 550, SMTPEnh: "5.1.1",
			Reason: "RCPT: recipient suppressed after hard bounce on 2026-12-01"},
		{Event: events.Rejected, User: "shop", Rcpt: "k@gmail.com", SMTPCode: 501, Reason: "RCPT: bad recipient address syntax"},
		delivery("news", "l@gmail.com", events.StatusDelivered, 250),
		{Event: events.Suppressed, Rcpt: "m@gmail.com"}, // follows a counted bounce: not again
	} {
		ev.Time = now
		e.pub.Publish(ev)
	}
	want := stats.Counts{Accepted: 3, Delivered: 2, Deferred: 1, Bounced: 2, Complaints: 1, Suppressed: 1}
	q := stats.Query{User: "shop", Since: now.Add(-time.Hour)}
	relaytest.Eventually(t, "counts of shop", func() bool { return totals(t, s, q) == want })
	relaytest.Eventually(t, "consumer settled", e.settled)
	if got := totals(t, s, q); got != want {
		t.Fatalf("shop: %+v, want %+v", got, want)
	}
	all := totals(t, s, stats.Query{Since: now.Add(-time.Hour)})
	if all.Delivered != 3 || all.Bounced != 2 {
		t.Errorf("all users: %+v", all)
	}
	if r := want.BounceRate(); r != 0.5 {
		t.Errorf("bounce rate %v, want 0.5", r)
	}
	gm := totals(t, s, stats.Query{User: "shop", Domain: "gmail.com", Since: now.Add(-time.Hour)})
	if gm != (stats.Counts{Accepted: 2, Delivered: 1, Deferred: 1, Bounced: 1, Complaints: 1, Suppressed: 1}) {
		t.Errorf("shop at gmail.com: %+v", gm)
	}
	if got := totals(t, s, stats.Query{User: "shop", Since: now.Add(time.Minute)}); !got.Zero() {
		t.Errorf("after the events: %+v", got)
	}
	rows, err := s.Rows(context.Background(), stats.Query{Since: now.Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(rows)
	exp := "[{news  {1 1 0 0 0 0}} {news gmail.com {0 1 0 0 0 0}} {shop  {3 2 1 2 1 1}} " +
		"{shop gmail.com {2 1 1 1 1 1}} {shop example.org {1 1 0 1 0 0}}]"
	if got != exp {
		t.Errorf("rows:\n got %s\nwant %s", got, exp)
	}
	from := now.Truncate(time.Minute).Add(-10 * time.Minute)
	pts, err := s.Series(context.Background(), stats.Query{User: "shop", Since: from, Until: from.Add(15 * time.Minute)},
		5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(pts) != 3 || !pts[0].Start.Equal(from) || pts[1].Delivered != 0 || pts[2].Counts != want {
		t.Errorf("series: %+v", pts)
	}
}

// TestTwoAggregatorsCountOnce: two nodes pulling from the one consumer
// count every event once.
func TestTwoAggregatorsCountOnce(t *testing.T) {
	e := newEnv(t)
	a := e.store(stats.Options{})
	b := e.store(stats.Options{Interval: 7 * time.Millisecond})
	now := time.Now().UTC()
	const n = 600
	for i := range n {
		ev := delivery(fmt.Sprintf("u%d", i%3), fmt.Sprintf("r%d@d%d.example", i, i%7), events.StatusDelivered, 250)
		ev.Time = now.Add(-time.Duration(i) * time.Second)
		e.pub.Publish(ev)
	}
	q := stats.Query{Since: now.Add(-time.Hour)}
	relaytest.Eventually(t, "every event counted", func() bool { return totals(t, a, q).Delivered >= n })
	relaytest.Eventually(t, "consumer settled", e.settled)
	for _, s := range []*stats.Store{a, b} {
		if got := totals(t, s, q).Delivered; got != n {
			t.Fatalf("delivered %d, want %d", got, n)
		}
	}
	if got := totals(t, b, stats.Query{User: "u1", Since: now.Add(-time.Hour)}).Delivered; got != n/3 {
		t.Errorf("u1 delivered %d, want %d", got, n/3)
	}
}

// TestWindowTotals: the guard's window sum (settled hours from the
// node's copy) equals Totals over a day and a bit, from any minute.
func TestWindowTotals(t *testing.T) {
	e := newEnv(t)
	s := e.store(stats.Options{})
	now := time.Now().UTC()
	const n = 26 * 6
	for i := range n {
		ev := delivery("shop", fmt.Sprintf("r%d@gmail.com", i), events.StatusDelivered, 250)
		if i%5 == 0 {
			ev = delivery("shop", fmt.Sprintf("r%d@gmail.com", i), events.StatusFailed, 550)
		}
		ev.Time = now.Add(-time.Duration(i) * 10 * time.Minute)
		e.pub.Publish(ev)
	}
	relaytest.Eventually(t, "all counted", func() bool {
		c := totals(t, s, stats.Query{User: "shop", Since: now.Add(-27 * time.Hour)})
		return c.Delivered+c.Bounced == n
	})
	relaytest.Eventually(t, "consumer settled", e.settled)
	for _, back := range []time.Duration{30 * time.Minute, 3 * time.Hour, 24*time.Hour + 7*time.Minute, 25 * time.Hour} {
		since := now.Add(-back)
		want := totals(t, s, stats.Query{User: "shop", Since: since})
		for range 2 { // read, then from the copy
			got, err := s.WindowTotals(context.Background(), "shop", since)
			if err != nil || got != want {
				t.Fatalf("window of %s: %+v, %v; want %+v", back, got, err, want)
			}
		}
	}
}

// BenchmarkSeriesDay is the console's day chart of one user: 24 hours of
// minute counts in 5-minute steps.
func BenchmarkSeriesDay(b *testing.B) {
	e := newEnv(b)
	s := e.store(stats.Options{})
	now := time.Now().UTC()
	for i := range 24 * 60 {
		ev := delivery("shop", fmt.Sprintf("r%d@gmail.com", i), events.StatusDelivered, 250)
		ev.Time = now.Add(-time.Duration(i) * time.Minute)
		e.pub.Publish(ev)
	}
	q := stats.Query{User: "shop", Since: now.Add(-24 * time.Hour), Until: now.Add(time.Minute)}
	relaytest.Eventually(b, "a day counted", func() bool { return totals(b, s, q).Delivered == 24*60 })
	b.ResetTimer()
	for b.Loop() {
		pts, err := s.Series(context.Background(), q, 5*time.Minute)
		if err != nil || len(pts) != 24*12+1 {
			b.Fatalf("%d points, %v", len(pts), err)
		}
	}
}
