// Package admin owns jetrelay's operational HTTP endpoint and its metrics:
// /metrics (Prometheus, on a private registry), /healthz (the process is
// up), /readyz (JetStream answers, the queue stream has a leader and the
// listeners are open) and, when admin.pprof is set, /debug/pprof/.
//
// Metrics come from events where they can: Metrics implements
// events.Publisher, so hand it to the Emitter (events.Tee(metrics,
// streamPublisher)) and every accepted, rejected and delivery event moves
// the counters and the latency histogram with no metric calls in
// submission or delivery. What events do not carry is hooked explicitly:
// active connections (Connections(dir).Inc/Dec), DKIM signing time,
// JetStream publish time, dropped events. Queue depth and the age of the
// oldest entry per state are sampled periodically from the stream by the
// Server (queue.Stats: a consumer info and one direct get per state).
//
// The cluster's state (nodes, stream replica groups, the delivery
// consumer's backlog) is not sampled: when Options.Cluster is set, its
// gauges are taken at scrape time through a small cache (cluster.go).
//
// Every Metrics method is safe on a nil *Metrics (a no-op), so components
// can run without instrumentation.
package admin

import (
	"regexp"
	"strconv"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Connection directions for Connections.
const (
	Inbound  = "inbound"
	Outbound = "outbound"
)

// Metrics is jetrelay's instrumentation.
type Metrics struct {
	reg        *prometheus.Registry
	accepted   prometheus.Counter
	rejected   *prometheus.CounterVec
	deliveries *prometheus.CounterVec
	latency    prometheus.Histogram
	depth      *prometheus.GaugeVec
	oldest     *prometheus.GaugeVec
	conns      *prometheus.GaugeVec
	tls        *prometheus.CounterVec
	dkimSign   prometheus.Histogram
	jsPublish  prometheus.Histogram
	dropped    prometheus.Counter
	// policyReads counts policy reads that failed open (submit.PolicyReadObserver).
	policyReads *prometheus.CounterVec
}

// NewMetrics registers jetrelay's series (and the Go runtime and process
// collectors) on a new private registry.
func NewMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		accepted: prometheus.NewCounter(prometheus.CounterOpts{Name: "jetrelay_messages_accepted_total",
			Help: "Messages accepted for delivery (250 after DATA)."}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "jetrelay_messages_rejected_total",
			Help: "Submission commands and connections refused, by enhanced status code (reason)."}, []string{"reason"}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "jetrelay_deliveries_total",
			Help: "Delivery attempt outcomes per recipient, by status and enhanced status class (2, 4, 5)."},
			[]string{"status", "class"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "jetrelay_delivery_latency_seconds",
			Help:    "Time from acceptance to successful delivery.",
			Buckets: []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600}}),
		depth: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "jetrelay_queue_depth",
			Help: "Queue entries by state (ready, in-flight, deferred, held), sampled."}, []string{"state"}),
		oldest: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "jetrelay_queue_oldest_age_seconds",
			Help: "Age since arrival of the entry longest in each state (0 when empty), sampled."}, []string{"state"}),
		conns: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "jetrelay_connections_active",
			Help: "Open SMTP connections: inbound (submission) and outbound (delivery)."}, []string{"direction"}),
		tls: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "jetrelay_tls_deliveries_total",
			Help: "Successful deliveries by TLS version (none = plaintext)."}, []string{"tls"}),
		dkimSign: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "jetrelay_dkim_sign_seconds",
			Help: "Time to DKIM-sign one message.", Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 10)}),
		jsPublish: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "jetrelay_jetstream_publish_seconds",
			Help: "Time for JetStream to acknowledge an enqueue.", Buckets: prometheus.ExponentialBuckets(0.0002, 2.5, 12)}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "jetrelay_events_dropped_total",
			Help: "Events not stored in the events stream (buffer full or publish failed)."}),
		policyReads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "jetrelay_policy_read_failures_total",
			Help: "Policy reads (e.g. the suppression lookup at RCPT) that failed or timed out and were skipped."},
			[]string{"read"}),
	}
	m.reg.MustRegister(m.accepted, m.rejected, m.deliveries, m.latency, m.depth, m.oldest, m.conns,
		m.tls, m.dkimSign, m.jsPublish, m.dropped, m.policyReads,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, d := range []string{Inbound, Outbound} {
		m.conns.WithLabelValues(d)
	}
	m.policyReads.WithLabelValues("suppression")
	for _, st := range queue.States {
		m.depth.WithLabelValues(string(st))
		m.oldest.WithLabelValues(string(st))
	}
	return m
}

// Registry returns the private registry (for /metrics and tests).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Publish implements events.Publisher: it counts the event. It never blocks.
func (m *Metrics) Publish(e *events.Event) {
	if m == nil {
		return
	}
	switch e.Event {
	case events.Accepted:
		m.accepted.Inc()
	case events.Rejected:
		m.rejected.WithLabelValues(reason(e)).Inc()
	case events.Delivery:
		m.deliveries.WithLabelValues(e.Status, class(e)).Inc()
		if e.Status != events.StatusDelivered && e.Status != events.StatusRelayed {
			return
		}
		m.tls.WithLabelValues(tlsLabel(e.TLS)).Inc()
		if !e.Arrival.IsZero() && !e.Time.Before(e.Arrival) {
			m.latency.Observe(e.Time.Sub(e.Arrival).Seconds())
		}
	}
}

// Connections returns the active-connections gauge for direction (Inbound
// or Outbound): Inc when a connection opens, Dec when it closes. Nil on a
// nil *Metrics; callers keep the result behind a small interface.
func (m *Metrics) Connections(direction string) prometheus.Gauge {
	if m == nil {
		return nil
	}
	return m.conns.WithLabelValues(direction)
}

// ObserveDKIMSign records one signing's duration.
func (m *Metrics) ObserveDKIMSign(d time.Duration) {
	if m != nil {
		m.dkimSign.Observe(d.Seconds())
	}
}

// ObservePublish records how long JetStream took to acknowledge an enqueue.
func (m *Metrics) ObservePublish(d time.Duration) {
	if m != nil {
		m.jsPublish.Observe(d.Seconds())
	}
}

// ObservePolicyReadFailed counts a policy read that failed open (read
// names it: "suppression").
func (m *Metrics) ObservePolicyReadFailed(read string) {
	if m != nil {
		m.policyReads.WithLabelValues(read).Inc()
	}
}

// EventDropped counts one event the events stream did not store
// (events.PublisherOptions.OnDrop).
func (m *Metrics) EventDropped() {
	if m != nil {
		m.dropped.Inc()
	}
}

// SetQueueStats records a queue sample taken at now.
func (m *Metrics) SetQueueStats(stats map[queue.State]queue.StateStat, now time.Time) {
	if m == nil {
		return
	}
	for _, st := range queue.States {
		s := stats[st]
		m.depth.WithLabelValues(string(st)).Set(float64(s.Count))
		age := 0.0
		if s.Count > 0 && !s.Oldest.IsZero() && now.After(s.Oldest) {
			age = now.Sub(s.Oldest).Seconds()
		}
		m.oldest.WithLabelValues(string(st)).Set(age)
	}
}

var enhRe = regexp.MustCompile(`^[245]\.[0-9]{1,3}\.[0-9]{1,3}$`)

// reason labels a rejection by its enhanced status code (RFC 3463): a
// bounded set that says why (5.7.8 auth, 4.7.0 refused connection, ...).
func reason(e *events.Event) string {
	if enhRe.MatchString(e.SMTPEnh) {
		return e.SMTPEnh
	}
	if e.SMTPCode >= 200 && e.SMTPCode < 600 {
		return strconv.Itoa(e.SMTPCode)
	}
	return "other"
}

// class is the enhanced status class (RFC 3463 §3.1) of a delivery
// outcome: from the enhanced code, else the reply code, else the status
// (a DNS or connection failure has no reply).
func class(e *events.Event) string {
	switch {
	case enhRe.MatchString(e.SMTPEnh):
		return e.SMTPEnh[:1]
	case e.SMTPCode >= 200 && e.SMTPCode < 600:
		return strconv.Itoa(e.SMTPCode / 100)
	case e.Status == events.StatusDelivered || e.Status == events.StatusRelayed:
		return "2"
	case e.Status == events.StatusDeferred:
		return "4"
	}
	return "5"
}

var tlsRe = regexp.MustCompile(`^TLS ?1\.[0-3]$`)

func tlsLabel(v string) string {
	switch {
	case v == "" || v == "none":
		return "none"
	case tlsRe.MatchString(v):
		return v
	}
	return "other"
}
