package bounce

import (
	"context"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestSuppressionLookupSurvivesNodeLoss: with the list at R3, lookups are
// answered by the replicas: they keep answering, and rightly, when the
// bucket's leader dies and even when a second node goes (no quorum, no
// leader) — a suppression lookup needs no leader, so RCPT does not wait
// for an election.
func TestSuppressionLookupSurvivesNodeLoss(t *testing.T) {
	t.Parallel()
	c := queuetest.StartCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*queuetest.NodeWait)
	defer cancel()
	var l *SuppressionList
	js := jsOn(t, c.Nodes[0])
	queuetest.Eventually(t, queuetest.NodeWait, "the bucket created at R3", func() bool {
		octx, ocancel := context.WithTimeout(ctx, 10*time.Second)
		defer ocancel()
		var err error
		l, err = OpenSuppressionList(octx, SuppressionOptions{JetStream: js, Replicas: 3})
		if err != nil {
			t.Logf("open: %v", err)
		}
		return err == nil
	})
	if _, err := l.Add(ctx, Suppression{Addr: "gone@example.org"}, ActorIntake); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, "KV_"+SuppressBucket)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil || info.Cluster == nil || info.Cluster.Leader == "" {
		t.Fatalf("bucket stream info: %+v, %v", info, err)
	}
	leader := info.Cluster.Leader
	var survivor, other *server.Server
	for _, ns := range c.Nodes {
		switch {
		case ns.Name() == leader:
		case survivor == nil:
			survivor = ns
		default:
			other = ns
		}
	}
	list, err := AttachSuppressionList(ctx, SuppressionOptions{JetStream: jsOn(t, survivor)})
	if err != nil {
		t.Fatal(err)
	}
	lookups := func(what string) {
		t.Helper()
		queuetest.Eventually(t, queuetest.NodeWait, "a lookup answered "+what, func() bool {
			_, ok, err := lookup(list)
			return ok && err == nil
		})
		for range 10 {
			if _, ok, err := lookup(list); !ok || err != nil {
				t.Fatalf("lookup %s: suppressed=%v, %v", what, ok, err)
			}
		}
	}
	lookups("with all nodes up")
	c.Node(leader).Shutdown()
	start := time.Now()
	lookups("after the leader died")
	t.Logf("lookups answered again %s after the leader died", time.Since(start).Round(time.Millisecond))
	other.Shutdown()
	lookups("without quorum")
}

func lookup(l *SuppressionList) (time.Time, bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return l.Suppressed(ctx, "Gone@example.org")
}

// jsOn connects to ns (closed at test end).
func jsOn(t *testing.T, ns *server.Server) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(ns.ClientURL(), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}
