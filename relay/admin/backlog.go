package admin

import (
	"context"
	"sync"
	"time"

	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// maxBacklogConsumers bounds the durables one scrape reports (the relay
// makes four: the message index, stats, TLS-RPT and webhooks; operators'
// own durables on the stream count too).
const maxBacklogConsumers = 64

// backlogCollector exposes how far the events stream's durable consumers
// are behind, taken at scrape time like the cluster gauges (cached for
// clusterCacheTTL, each look bounded by clusterCollectTimeout):
//
//	jetrelay_events_consumer_pending{consumer}      events not yet delivered to it
//	jetrelay_events_consumer_ack_pending{consumer}  delivered, not yet acknowledged
//
// The message index's pending count is how far the console's search lags
// the mail; after a burst it tells when the index (and stats, webhooks)
// have caught up. Ephemeral consumers (`jetrelay logs -f`) are left out.
type backlogCollector struct {
	js                  jetstream.JetStream
	pending, ackPending *prometheus.Desc

	mu   sync.Mutex
	last []backlog
	at   time.Time
}

type backlog struct {
	name                string
	pending, ackPending float64
}

func newBacklogCollector(js jetstream.JetStream) *backlogCollector {
	return &backlogCollector{
		js: js,
		pending: prometheus.NewDesc("jetrelay_events_consumer_pending",
			"Events stream durable consumer: events not yet delivered to it.", []string{"consumer"}, nil),
		ackPending: prometheus.NewDesc("jetrelay_events_consumer_ack_pending",
			"Events stream durable consumer: events delivered and not yet acknowledged.", []string{"consumer"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *backlogCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.pending
	ch <- c.ackPending
}

// Collect implements prometheus.Collector.
func (c *backlogCollector) Collect(ch chan<- prometheus.Metric) {
	for _, b := range c.look() {
		ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, b.pending, b.name)
		ch <- prometheus.MustNewConstMetric(c.ackPending, prometheus.GaugeValue, b.ackPending, b.name)
	}
}

// look returns the cached counts, reading them again when older than
// clusterCacheTTL. A failed read reports nothing (no gauge rather than a
// wrong one) until the next look.
func (c *backlogCollector) look() []backlog {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last != nil && time.Since(c.at) < clusterCacheTTL {
		return c.last
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterCollectTimeout)
	defer cancel()
	c.last, c.at = []backlog{}, time.Now()
	st, err := c.js.Stream(ctx, events.StreamName)
	if err != nil {
		return c.last
	}
	l := st.ListConsumers(ctx)
	var got []backlog
	for info := range l.Info() { // read to the end: the lister's sender does not watch ctx
		if info.Config.Durable == "" || len(got) == maxBacklogConsumers {
			continue
		}
		got = append(got, backlog{name: info.Name, pending: float64(info.NumPending),
			ackPending: float64(info.NumAckPending)})
	}
	if l.Err() == nil { // a partial list would hide a consumer's gauge
		c.last = got
	}
	return c.last
}
