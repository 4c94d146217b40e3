package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/rs/zerolog"
)

// TestClusterStatusServeNodes: three `serve` nodes of one embedded
// cluster. `cluster status --config` of a node (the embedded server's
// system user, across routes with a secret) and that node's /metrics show
// all three up; with one node stopped both name it down and the CLI exits
// 1 naming the queue stream's lost replica.
func TestClusterStatusServeNodes(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "cluster.password")
	if err := os.WriteFile(secret, []byte("route-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	routePorts := []int{freePort(t), freePort(t), freePort(t)}
	var nodes []testRelayConfig
	var admins []string
	var logs []*syncBuffer
	var stops []func()
	var dones []chan error
	for i := range 3 {
		c := writeRelayConfig(t)
		cfg := clusterNodeConfig(t, i, routePorts, secret, c)
		cfg.Admin.Listen = fmt.Sprintf("127.0.0.1:%d", freePort(t))
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		buf := &syncBuffer{}
		go func() { done <- serve(ctx, cfg, zerolog.New(buf), stdio{nil, buf, buf}) }()
		stop := sync.OnceFunc(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(2 * time.Minute):
				t.Errorf("node %d did not stop", i)
			}
		})
		t.Cleanup(stop)
		nodes, admins = append(nodes, c), append(admins, "http://"+cfg.Admin.Listen)
		logs, stops = append(logs, buf), append(stops, stop)
		dones = append(dones, done)
	}
	waitNodesLogOrExit(t, logs, dones, `"event":"started"`)
	status := func() (int, string, string) { return runOps(t, clusterStatusMain, "--config", nodes[0].cfgPath) }
	var rc int
	var out, errOut string
	queuetest.Eventually(t, 2*time.Minute, "cluster status exit 0", func() bool {
		rc, out, errOut = status()
		return rc == 0
	})
	for i := range 3 {
		if !strings.Contains(out, fmt.Sprintf("node-%d  ", i)) || strings.Contains(out, "DOWN") {
			t.Fatalf("node-%d not shown up:\n%s", i, out)
		}
	}
	queuetest.Eventually(t, time.Minute, "/metrics with three nodes up and no problem", func() bool {
		m := scrape(t, admins[0])
		return strings.Contains(m, `jetrelay_cluster_node_up{node="node-2"} 1`) &&
			strings.Contains(m, "jetrelay_cluster_problems 0")
	})

	stops[2]()
	queuetest.Eventually(t, 2*time.Minute, "cluster status exit 1 naming the queue stream", func() bool {
		rc, out, errOut = status()
		return rc == 1 && strings.Contains(errOut, "stream JETRELAY_SPOOL lost 1 of 3 replicas (node-2 offline)")
	})
	queuetest.Eventually(t, time.Minute, "/metrics with node-2 down", func() bool {
		m := scrape(t, admins[0])
		return strings.Contains(m, `jetrelay_cluster_node_up{node="node-2"} 0`) &&
			strings.Contains(m, `jetrelay_stream_replicas_lost{stream="JETRELAY_SPOOL"} 1`)
	})
}

func scrape(t *testing.T, base string) string {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// waitNodesLogOrExit waits until every node's log contains s, failing at
// once, with that node's error and log, when any node's serve returns
// first (a node that cannot start must not leave the others waiting out
// the deadline for a cluster that cannot form).
func waitNodesLogOrExit(t *testing.T, logs []*syncBuffer, dones []chan error, s string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		all := true
		for i, l := range logs {
			select {
			case err := <-dones[i]:
				dones[i] <- err // for the cleanup's stop
				t.Fatalf("node %d: serve returned %v before %s in the log:\n%s", i, err, s, l)
			default:
			}
			all = all && strings.Contains(l.String(), s)
		}
		if all {
			return
		}
		if time.Now().After(deadline) {
			for i, l := range logs {
				if !strings.Contains(l.String(), s) {
					t.Errorf("node %d: no %s in the log:\n%s", i, s, l)
				}
			}
			t.FailNow()
		}
		time.Sleep(50 * time.Millisecond) // polling logs
	}
}
