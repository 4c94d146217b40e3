package admin

import (
	"context"
	"sync"
	"time"

	"github.com/jetrelay/jetrelay/relay/clusterview"
	"github.com/prometheus/client_golang/prometheus"
)

// Cluster gauges are taken at scrape time from clusterview.Collect, at
// most once per clusterCacheTTL (concurrent scrapes share one look), each
// look bounded by clusterCollectTimeout; a scrape never waits longer.
const (
	clusterCacheTTL       = 5 * time.Second
	clusterCollectTimeout = 4 * time.Second
)

// clusterCollector exposes the cluster view as gauges:
//
//	jetrelay_cluster_node_up{node}                   1 up, 0 down
//	jetrelay_cluster_node_rtt_seconds{node}          round trip (when known)
//	jetrelay_cluster_problems                        problems found (0 = healthy)
//	jetrelay_stream_has_leader{stream}               1 when the group has a leader
//	jetrelay_stream_quorum{stream}                   1 when it has quorum
//	jetrelay_stream_replicas_lost{stream}            configured replicas not current
//	jetrelay_stream_replica_current{stream,replica}  1 current, 0 not
//	jetrelay_stream_replica_lag{stream,replica}      operations behind the leader
//	jetrelay_consumer_pending                        delivery consumer: not yet handed out
//	jetrelay_consumer_ack_pending                    delivery consumer: leased, not acked
type clusterCollector struct {
	o clusterview.Options

	nodeUp, nodeRTT, problems                     *prometheus.Desc
	hasLeader, quorum, lost, replCurrent, replLag *prometheus.Desc
	pending, ackPending                           *prometheus.Desc

	mu   sync.Mutex
	last *clusterview.Status
	at   time.Time
}

func newClusterCollector(o clusterview.Options) *clusterCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &clusterCollector{
		o:       o,
		nodeUp:  d("jetrelay_cluster_node_up", "NATS node up (1) or down (0).", "node"),
		nodeRTT: d("jetrelay_cluster_node_rtt_seconds", "Round trip to the NATS node from this relay.", "node"),
		problems: d("jetrelay_cluster_problems", "Cluster problems found (streams without quorum or "+
			"with lost replicas, nodes down, questions unanswered); 0 is healthy."),
		hasLeader: d("jetrelay_stream_has_leader", "The stream's replica group has a leader (1) or not (0).", "stream"),
		quorum:    d("jetrelay_stream_quorum", "The stream has a leader and a majority of current replicas.", "stream"),
		lost:      d("jetrelay_stream_replicas_lost", "Configured replicas of the stream that are not current.", "stream"),
		replCurrent: d("jetrelay_stream_replica_current", "A follower of the stream is current (1) or not (0).",
			"stream", "replica"),
		replLag: d("jetrelay_stream_replica_lag", "Operations a follower of the stream is behind its leader.",
			"stream", "replica"),
		pending:    d("jetrelay_consumer_pending", "Delivery consumer: entries not yet handed to a worker."),
		ackPending: d("jetrelay_consumer_ack_pending", "Delivery consumer: entries leased and not yet acknowledged."),
	}
}

// Describe implements prometheus.Collector.
func (c *clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.nodeUp, c.nodeRTT, c.problems, c.hasLeader, c.quorum, c.lost,
		c.replCurrent, c.replLag, c.pending, c.ackPending} {
		ch <- d
	}
}

// status returns the cached view, looking again when it is older than
// clusterCacheTTL.
func (c *clusterCollector) status() *clusterview.Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last == nil || time.Since(c.at) >= clusterCacheTTL {
		ctx, cancel := context.WithTimeout(context.Background(), clusterCollectTimeout)
		c.last = clusterview.Collect(ctx, c.o)
		cancel()
		c.at = time.Now()
	}
	return c.last
}

// Collect implements prometheus.Collector.
func (c *clusterCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.status()
	g := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	g(c.problems, float64(len(st.Problems)))
	for _, n := range st.Nodes {
		g(c.nodeUp, b2f(n.Up), n.Name)
		if n.RTTMillis > 0 {
			g(c.nodeRTT, n.RTTMillis/1000, n.Name)
		}
	}
	for _, s := range st.Streams {
		g(c.hasLeader, b2f(s.Leader != ""), s.Name)
		g(c.quorum, b2f(s.Quorum), s.Name)
		if s.Error == "" {
			g(c.lost, float64(s.Lost()), s.Name)
		}
		for _, r := range s.Replicas {
			g(c.replCurrent, b2f(r.Current), s.Name, r.Name)
			g(c.replLag, float64(r.Lag), s.Name, r.Name)
		}
	}
	if st.Consumer.Error == "" && st.Consumer.Name != "" {
		g(c.pending, float64(st.Consumer.Pending))
		g(c.ackPending, float64(st.Consumer.AckPending))
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
