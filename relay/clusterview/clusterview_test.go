package clusterview_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/jetrelay/jetrelay/relay/clusterview"
	"github.com/jetrelay/jetrelay/relay/clusterview/clusterviewtest"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
)

func collect(t *testing.T, o clusterview.Options) *clusterview.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return clusterview.Collect(ctx, o)
}

// connectSystem connects as queue.SystemUser.
func connectSystem(t *testing.T, url, pass string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, append(opts, nats.UserInfo(queue.SystemUser, pass))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func TestStandalone(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	q := queuetest.RunJetStream(t, queuetest.Options{DataDir: dir})
	pass, err := queue.EnsurePassword(dir)
	if err != nil {
		t.Fatal(err)
	}
	sys := connectSystem(t, "", pass, nats.InProcessServer(q.Embedded()))
	for _, tc := range []struct {
		name   string
		sys    *nats.Conn
		source string
	}{{"system", sys, clusterview.SourceSystem}, {"streams", nil, clusterview.SourceStreams}} {
		t.Run(tc.name, func(t *testing.T) {
			st := collect(t, clusterview.ForQueue(q, tc.sys))
			if !st.Healthy() || st.NodeSource != tc.source {
				t.Fatalf("problems %q, source %s", st.Problems, st.NodeSource)
			}
			if len(st.Nodes) != 1 || st.Nodes[0].Name != "jetrelay" || !st.Nodes[0].Up {
				t.Fatalf("nodes %+v", st.Nodes)
			}
			for _, name := range []string{queue.StreamName, queue.ParkStreamName} {
				i := slices.IndexFunc(st.Streams, func(s clusterview.Stream) bool { return s.Name == name })
				if i < 0 {
					t.Fatalf("stream %s missing from %+v", name, st.Streams)
				}
				if s := st.Streams[i]; s.Leader != "jetrelay" || !s.Quorum || s.Configured != 1 || s.Current != 1 {
					t.Errorf("stream %+v", s)
				}
			}
		})
	}
}

func TestStandaloneJSONShape(t *testing.T) {
	t.Parallel()
	q := queuetest.RunJetStream(t)
	queuetest.EnqueueTo(t, q, "example.org")
	b, err := json.Marshal(collect(t, clusterview.ForQueue(q, nil)))
	if err != nil {
		t.Fatal(err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		t.Fatal(err)
	}
	wantKeys(t, "status", top, "nodes", "streams", "consumer", "node_source", "problems")
	var nodes, streams []map[string]json.RawMessage
	var cons map[string]json.RawMessage
	mustJSON(t, top["nodes"], &nodes)
	mustJSON(t, top["streams"], &streams)
	mustJSON(t, top["consumer"], &cons)
	wantKeys(t, "node", nodes[0], "name", "client_addr", "route_addr", "up", "rtt_ms")
	wantKeys(t, "stream", streams[0], "name", "leader", "replicas", "configured_replicas",
		"current_replicas", "quorum")
	wantKeys(t, "consumer", cons, "stream", "name", "pending", "ack_pending")
	if string(cons["pending"]) != "1" || string(cons["ack_pending"]) != "0" {
		t.Errorf("consumer %s", top["consumer"])
	}
}

func wantKeys(t *testing.T, what string, m map[string]json.RawMessage, keys ...string) {
	t.Helper()
	var got []string
	for k := range m {
		got = append(got, k)
	}
	slices.Sort(got)
	slices.Sort(keys)
	if !slices.Equal(got, keys) {
		t.Errorf("%s keys %q, want %q", what, got, keys)
	}
}

func mustJSON(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}

// openOn opens the relay's queue (R3) on node i of c.
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

func TestThreeNodes(t *testing.T) {
	t.Parallel()
	c := clusterviewtest.Run(t, 3)
	q := openOn(t, c, 0)
	sys := connectSystem(t, c.Nodes[0].URL(), clusterviewtest.Password)
	o := clusterview.ForQueue(q, sys)

	var st *clusterview.Status
	queuetest.Eventually(t, 60*time.Second, "a healthy cluster", func() bool {
		st = collect(t, o)
		return st.Healthy()
	})
	if len(st.Nodes) != 3 {
		t.Fatalf("nodes %+v", st.Nodes)
	}
	for i, n := range st.Nodes {
		nd := c.Nodes[i]
		if n.Name != nd.Name || !n.Up || n.ClientAddr != strings.TrimPrefix(nd.URL(), "nats://") ||
			n.RouteAddr != nd.ClusterAddr() || n.RTTMillis <= 0 {
			t.Errorf("node %+v, want %s at %s and %s", n, nd.Name, nd.URL(), nd.ClusterAddr())
		}
	}
	for _, s := range st.Streams {
		if s.Configured != 3 || s.Current != 3 || len(s.Replicas) != 2 || s.Leader == "" {
			t.Errorf("stream %+v", s)
		}
	}

	c.Stop(2)
	queuetest.Eventually(t, 90*time.Second, "n3 seen down and the streams' lost replica", func() bool {
		st = collect(t, o)
		return lostEverywhere(st, "n3")
	})
	t.Logf("one node down: %q", st.Problems)
	if i := slices.IndexFunc(st.Nodes, func(n clusterview.Node) bool { return n.Name == "n3" }); i < 0 ||
		st.Nodes[i].Up {
		t.Errorf("n3 not shown down: %+v", st.Nodes)
	}
	if without := collect(t, clusterview.ForQueue(q, nil)); without.NodeSource != clusterview.SourceStreams ||
		!lostEverywhere(without, "n3") {
		t.Errorf("without system access: %+v", without)
	}

	c.Restart(2)
	queuetest.Eventually(t, 90*time.Second, "healthy again", func() bool {
		return collect(t, o).Healthy()
	})
}

// lostEverywhere reports whether every stream has quorum and lost exactly
// one replica, node, and the problems name each stream and the node.
func lostEverywhere(st *clusterview.Status, node string) bool {
	problems := strings.Join(st.Problems, "\n")
	for _, s := range st.Streams {
		if !s.Quorum || s.Lost() != 1 || !strings.Contains(problems, "stream "+s.Name+" lost 1 of 3") {
			return false
		}
	}
	return len(st.Streams) >= 2 && strings.Contains(problems, "node "+node+" is down")
}

func TestQuorumLost(t *testing.T) {
	t.Parallel()
	c := clusterviewtest.Run(t, 3)
	q := openOn(t, c, 0)
	sys := connectSystem(t, c.Nodes[0].URL(), clusterviewtest.Password)
	o := clusterview.ForQueue(q, sys)
	queuetest.Eventually(t, 60*time.Second, "a healthy cluster", func() bool { return collect(t, o).Healthy() })

	c.Stop(1)
	c.Stop(2)
	var st *clusterview.Status
	queuetest.Eventually(t, 120*time.Second, "the queue stream without quorum", func() bool {
		st = collect(t, o)
		return slices.ContainsFunc(st.Problems, func(p string) bool {
			return strings.HasPrefix(p, "stream "+queue.StreamName+" has no quorum: leader none, 1 of 3")
		})
	})
	t.Logf("quorum lost: %q", st.Problems)
	for _, n := range st.Nodes {
		if n.Up != (n.Name == "n1") {
			t.Errorf("node %+v", n)
		}
	}
}
