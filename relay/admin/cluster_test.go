package admin_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/jetrelay/jetrelay/relay/admin"
	"github.com/jetrelay/jetrelay/relay/clusterview"
	"github.com/jetrelay/jetrelay/relay/clusterview/clusterviewtest"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
)

// openOn opens the relay's queue (R3) through node i of c.
func openOn(t *testing.T, c *clusterviewtest.Cluster, i int) *queue.Queue {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	q, err := queue.Open(ctx, queue.Options{URL: c.Nodes[i].URL(), User: queue.EmbeddedUser,
		Password: clusterviewtest.Password, Replicas: 3, Logger: zerolog.New(zerolog.NewTestWriter(t))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(q.Close)
	return q
}

func TestClusterGaugesStandalone(t *testing.T) {
	t.Parallel()
	q := queuetest.RunJetStream(t)
	queuetest.EnqueueTo(t, q, "example.org")
	view := clusterview.ForQueue(q, nil)
	_, base := startAdmin(t, admin.Options{Metrics: admin.NewMetrics(), Queue: q, Cluster: &view})
	want := map[string]float64{
		`jetrelay_cluster_node_up{node="jetrelay"}`:              1,
		"jetrelay_cluster_problems":                              0,
		`jetrelay_stream_has_leader{stream="JETRELAY_SPOOL"}`:    1,
		`jetrelay_stream_quorum{stream="JETRELAY_PARKED"}`:       1,
		`jetrelay_stream_replicas_lost{stream="JETRELAY_SPOOL"}`: 0,
		"jetrelay_consumer_pending":                              1,
		"jetrelay_consumer_ack_pending":                          0,
	}
	for s, v := range want {
		if got := metric(t, base, s); got != v {
			t.Errorf("%s = %v, want %v", s, got, v)
		}
	}
	if got := metric(t, base, `jetrelay_cluster_node_rtt_seconds{node="jetrelay"}`); got <= 0 {
		t.Errorf("rtt %v", got)
	}
}

func TestClusterGaugesNodeDown(t *testing.T) {
	t.Parallel()
	c := clusterviewtest.Run(t, 3)
	q := openOn(t, c, 0)
	sys, err := nats.Connect(c.Nodes[0].URL(), nats.UserInfo(queue.SystemUser, clusterviewtest.Password))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sys.Close)
	view := clusterview.ForQueue(q, sys)
	m := admin.NewMetrics()
	_, base := startAdmin(t, admin.Options{Metrics: m, Queue: q, Cluster: &view})

	queuetest.Eventually(t, 60*time.Second, "a healthy cluster in /metrics", func() bool {
		return metric(t, base, "jetrelay_cluster_problems") == 0
	})
	for _, n := range []string{"n1", "n2", "n3"} {
		if got := metric(t, base, `jetrelay_cluster_node_up{node="`+n+`"}`); got != 1 {
			t.Errorf("%s up = %v", n, got)
		}
	}
	c.Stop(2)
	queuetest.Eventually(t, 90*time.Second, "n3 down in /metrics", func() bool {
		return metric(t, base, `jetrelay_cluster_node_up{node="n3"}`) == 0 &&
			metric(t, base, `jetrelay_stream_replicas_lost{stream="JETRELAY_SPOOL"}`) == 1 &&
			metric(t, base, `jetrelay_stream_replica_current{replica="n3",stream="JETRELAY_SPOOL"}`) == 0
	})
	if got := metric(t, base, `jetrelay_stream_quorum{stream="JETRELAY_SPOOL"}`); got != 1 {
		t.Errorf("quorum with one node down = %v", got)
	}
	dashboardCharts(t, m.Registry())
}

// TestReadyzQuorumLoss: with two of three nodes gone the survivor's
// /readyz fails (JetStream may still answer from the survivor's own
// state), and passes again when they return.
func TestReadyzQuorumLoss(t *testing.T) {
	t.Parallel()
	c := clusterviewtest.Run(t, 3)
	q := openOn(t, c, 0)
	_, base := startAdmin(t, admin.Options{Metrics: admin.NewMetrics(), Queue: q})
	queuetest.Eventually(t, 60*time.Second, "ready", func() bool {
		code, _ := get(t, base+"/readyz")
		return code == 200
	})

	c.Stop(1)
	c.Stop(2)
	start := time.Now()
	var body string
	first := time.Duration(0)
	queuetest.Eventually(t, 120*time.Second, "readyz 503 naming the queue stream", func() bool {
		var code int
		code, body = get(t, base+"/readyz")
		if code == 503 && first == 0 {
			first = time.Since(start)
			t.Logf("first 503 after %s: %s", first.Round(time.Millisecond), strings.TrimSpace(body))
		}
		return code == 503 && strings.Contains(body, "jetstream: stream "+queue.StreamName)
	})
	t.Logf("503 naming the stream after %s: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(body))

	c.Restart(1)
	c.Restart(2)
	start = time.Now()
	queuetest.Eventually(t, 120*time.Second, "readyz 200 with quorum back", func() bool {
		code, _ := get(t, base+"/readyz")
		return code == 200
	})
	t.Logf("200 again after %s", time.Since(start).Round(time.Millisecond))
}
