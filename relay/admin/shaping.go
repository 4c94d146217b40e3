package admin

import (
	"context"
	"sync"
	"time"

	"github.com/jetrelay/jetrelay/relay/shaping"
	"github.com/prometheus/client_golang/prometheus"
)

// ShapingStatus reads every provider's shaping state, cluster-wide (cmd
// binds shaping.Status to the running settings).
type ShapingStatus func(ctx context.Context) ([]shaping.ProviderStatus, error)

// shapingCollector exposes the providers' shaping state as gauges, taken at
// scrape time like the cluster's (a cache of clusterCacheTTL, each look
// bounded by clusterCollectTimeout). The values are cluster-wide: every
// node reports the same, so dashboards take the max per provider.
//
//	jetrelay_shaping_connections{provider}          connections open now
//	jetrelay_shaping_connections_limit{provider}    configured limit (0 = unlimited)
//	jetrelay_shaping_rate_limit{provider}           configured messages per second (0 = unlimited)
//	jetrelay_shaping_rate_effective{provider}       in effect after backoff and rules (0 = unlimited)
//	jetrelay_shaping_messages_last_minute{provider} messages sent over the last minute
//	jetrelay_shaping_suspended{provider}            1 while suspended
//	jetrelay_shaping_waiting{provider}              queue entries waiting for the provider
type shapingCollector struct {
	read ShapingStatus

	conns, connLimit, rateLimit, rateEff, lastMinute, suspended, waiting *prometheus.Desc

	mu   sync.Mutex
	last []shaping.ProviderStatus
	at   time.Time
}

func newShapingCollector(read ShapingStatus) *shapingCollector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, []string{"provider"}, nil)
	}
	return &shapingCollector{
		read:      read,
		conns:     d("jetrelay_shaping_connections", "Connections open to the provider now, all nodes."),
		connLimit: d("jetrelay_shaping_connections_limit", "Configured connection limit of the provider (0 = unlimited)."),
		rateLimit: d("jetrelay_shaping_rate_limit", "Configured message rate of the provider per second (0 = unlimited)."),
		rateEff: d("jetrelay_shaping_rate_effective", "Message rate per second in effect after the builtin "+
			"backoff and rules (0 = unlimited)."),
		lastMinute: d("jetrelay_shaping_messages_last_minute", "Messages sent to the provider over the last minute."),
		suspended:  d("jetrelay_shaping_suspended", "The provider is suspended (1) or not (0)."),
		waiting:    d("jetrelay_shaping_waiting", "Queue entries waiting for a slot or a suspension of the provider."),
	}
}

// Describe implements prometheus.Collector.
func (c *shapingCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.conns, c.connLimit, c.rateLimit, c.rateEff, c.lastMinute,
		c.suspended, c.waiting} {
		ch <- d
	}
}

// status returns the cached state, reading it again when older than
// clusterCacheTTL; on an error the previous state is kept.
func (c *shapingCollector) status() []shaping.ProviderStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.at.IsZero() || time.Since(c.at) >= clusterCacheTTL {
		ctx, cancel := context.WithTimeout(context.Background(), clusterCollectTimeout)
		if st, err := c.read(ctx); err == nil {
			c.last = st
		}
		cancel()
		c.at = time.Now()
	}
	return c.last
}

// Collect implements prometheus.Collector.
func (c *shapingCollector) Collect(ch chan<- prometheus.Metric) {
	for _, p := range c.status() {
		g := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, p.Name)
		}
		g(c.conns, float64(p.Connections))
		g(c.connLimit, float64(p.Limit.Connections))
		g(c.rateLimit, perSecond(p.Limit.Rate))
		g(c.rateEff, perSecond(p.Effective))
		g(c.lastMinute, p.Rate)
		g(c.suspended, b2f(p.SuspendedUntil != nil))
		g(c.waiting, float64(p.Waiting))
	}
}

// perSecond is r in messages per second; 0 for unlimited.
func perSecond(r shaping.Rate) float64 {
	if r.Unlimited() {
		return 0
	}
	return float64(r.Count) / r.Per.Seconds()
}
