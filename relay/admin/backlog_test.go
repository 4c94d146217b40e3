package admin_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/jetrelay/jetrelay/relay/admin"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/nats-io/nats.go/jetstream"
)

// TestEventsBacklogGauges: each durable consumer on the events stream has
// its pending and ack-pending counts in /metrics, an ephemeral one (a
// `logs -f` tail) none; after the consumer took and acknowledged its
// events both gauges are 0 (read again once the 5 s cache expired); the
// example dashboard charts both.
func TestEventsBacklogGauges(t *testing.T) {
	t.Parallel()
	q := queuetest.RunJetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	js := q.JetStream()
	if _, err := events.EnsureStream(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, events.StreamName, jetstream.ConsumerConfig{
		Durable: "backlog_test", AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: events.SubjPrefix + ".>"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateConsumer(ctx, events.StreamName, jetstream.ConsumerConfig{
		AckPolicy: jetstream.AckNonePolicy, FilterSubject: events.SubjPrefix + ".>"}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a1", "a2", "a3"} {
		e := &events.Event{Time: time.Now(), Event: events.Accepted, QueueID: id}
		if _, err := js.Publish(ctx, events.Subject(e), []byte(`{"event":"accepted"}`)); err != nil {
			t.Fatal(err)
		}
	}
	m := admin.NewMetrics()
	_, base := startAdmin(t, admin.Options{Metrics: m, Queue: q})
	if got := metric(t, base, `jetrelay_events_consumer_pending{consumer="backlog_test"}`); got != 3 {
		t.Fatalf("pending = %v, want 3", got)
	}
	if got := metric(t, base, `jetrelay_events_consumer_ack_pending{consumer="backlog_test"}`); got != 0 {
		t.Fatalf("ack pending = %v, want 0", got)
	}
	_, body := get(t, base+"/metrics")
	if n := countLines(body, "jetrelay_events_consumer_pending{"); n != 1 {
		t.Fatalf("%d consumers reported, want the one durable:\n%s", n, body)
	}
	batch, err := cons.Fetch(3, jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for m := range batch.Messages() {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 3 {
		t.Fatalf("fetched %d of 3 events", n)
	}
	queuetest.Eventually(t, 30*time.Second, "the backlog at 0 in /metrics", func() bool {
		return metric(t, base, `jetrelay_events_consumer_pending{consumer="backlog_test"}`) == 0 &&
			metric(t, base, `jetrelay_events_consumer_ack_pending{consumer="backlog_test"}`) == 0
	})
	dashboardCharts(t, m.Registry())
}

// countLines counts the lines of body that start with prefix.
func countLines(body, prefix string) int {
	n := 0
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, prefix) {
			n++
		}
	}
	return n
}
