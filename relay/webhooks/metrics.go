package webhooks

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the per-webhook series on /metrics:
//
//	jetrelay_webhook_events_sent_total{webhook}    events in POSTs answered 2xx
//	jetrelay_webhook_posts_failed_total{webhook}   POSTs that failed (non-2xx, timeout, refused)
//	jetrelay_webhook_events_dropped_total{webhook} events given up after retry.max_age
//	jetrelay_webhook_post_seconds{webhook}         time of one POST, response included
//	jetrelay_webhook_pending{webhook}              events not yet acknowledged (consumer pending + ack pending), at scrape
//
// A nil *Metrics counts nothing.
type Metrics struct {
	sent, failed, dropped *prometheus.CounterVec
	latency               *prometheus.HistogramVec
	pending               *prometheus.Desc
	m                     *Manager
}

// collectTimeout bounds the consumer look-ups of one scrape.
const collectTimeout = 2 * time.Second

// NewMetrics registers the webhook series on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	x := &Metrics{
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "jetrelay_webhook_events_sent_total",
			Help: "Events a webhook's endpoint accepted (2xx)."}, []string{"webhook"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "jetrelay_webhook_posts_failed_total",
			Help: "Webhook POSTs that failed (non-2xx reply, timeout, connection refused) and are retried."},
			[]string{"webhook"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "jetrelay_webhook_events_dropped_total",
			Help: "Webhook events dropped after failing for longer than retry.max_age."}, []string{"webhook"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "jetrelay_webhook_post_seconds",
			Help: "Time of one webhook POST, response included.", Buckets: prometheus.ExponentialBuckets(0.005, 2.5, 10)},
			[]string{"webhook"}),
		pending: prometheus.NewDesc("jetrelay_webhook_pending",
			"Events of a webhook not yet acknowledged by its endpoint (the consumer's pending and ack pending), cluster-wide.",
			[]string{"webhook"}, nil),
	}
	for _, c := range []prometheus.Collector{x.sent, x.failed, x.dropped, x.latency, x} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return x, nil
}

// Describe implements prometheus.Collector (the pending gauge).
func (x *Metrics) Describe(ch chan<- *prometheus.Desc) { ch <- x.pending }

// Collect implements prometheus.Collector: pending per running webhook.
func (x *Metrics) Collect(ch chan<- prometheus.Metric) {
	if x.m == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), collectTimeout)
	defer cancel()
	for _, name := range x.m.Names() {
		n, err := Pending(ctx, x.m.o.JetStream, name)
		if err != nil {
			continue
		}
		ch <- prometheus.MustNewConstMetric(x.pending, prometheus.GaugeValue, float64(n), name)
	}
}

func (x *Metrics) observe(name string, d time.Duration, sent int, ok bool) {
	if x == nil {
		return
	}
	x.latency.WithLabelValues(name).Observe(d.Seconds())
	if ok {
		x.sent.WithLabelValues(name).Add(float64(sent))
	} else {
		x.failed.WithLabelValues(name).Inc()
	}
}

func (x *Metrics) drop(name string, n int) {
	if x != nil {
		x.dropped.WithLabelValues(name).Add(float64(n))
	}
}
