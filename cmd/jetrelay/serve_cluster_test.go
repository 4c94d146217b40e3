package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/bounce"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/submit"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// clusterNodeConfig writes node i's config of a three-node embedded
// cluster whose route ports are routePorts (every node lists all three).
func clusterNodeConfig(t *testing.T, i int, routePorts []int, secret string, c testRelayConfig) *config.Config {
	t.Helper()
	var routes []string
	for _, p := range routePorts {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	yaml := fmt.Sprintf(`hostname: relay.test
data_dir: %s
nats:
  listen: "%s"
  server_name: node-%d
  replicas: 3
  cluster:
    listen: 127.0.0.1:%d
    routes: [%s]
    password_file: %s
submission:
  listeners: [{addr: "%s", tls: starttls}]
  users: [%s]
delivery:
  dns: {servers: ["127.0.0.1:9"]}
  routes: [{domains: ["*"], host: "127.0.0.1:%d", tls: none}]
admin: {listen: ""}
log: {level: info}
`, filepath.Join(c.dir, "data"), c.natsAddr, i, routePorts[i], strings.Join(routes, ", "), secret,
		c.subAddr, c.userLine(t, c.user, c.pass), c.closedPort)
	if err := os.WriteFile(c.cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(c.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestServeClusterNodesWait: three `serve` nodes of one embedded cluster,
// started one after another: the first waits for JetStream (logging
// event=nats_waiting) instead of exiting, all three then run, every
// stream and bucket of every component has three replicas, and mail
// submitted to one node is in the shared queue.
func TestServeClusterNodesWait(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "cluster.password")
	if err := os.WriteFile(secret, []byte("route-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	routePorts := []int{freePort(t), freePort(t), freePort(t)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var nodes []testRelayConfig
	var logs []*syncBuffer
	done := make(chan error, 3)
	start := func(i int) {
		c := writeRelayConfig(t)
		cfg := clusterNodeConfig(t, i, routePorts, secret, c)
		buf := &syncBuffer{}
		nodes, logs = append(nodes, c), append(logs, buf)
		go func() { done <- serve(ctx, cfg, zerolog.New(buf), stdio{nil, buf, buf}) }()
	}
	start(0)
	waitServeLog(t, logs[0], `"event":"nats_waiting"`)
	if strings.Contains(logs[0].String(), `"event":"started"`) {
		t.Fatalf("the first node started alone:\n%s", logs[0])
	}
	start(1)
	start(2)
	for _, l := range logs {
		waitServeLog(t, l, `"event":"started"`)
	}
	submitOne(t, nodes[1], []byte("From: app@example.com\r\nTo: user@example.net\r\nSubject: cluster\r\n\r\nhello\r\n"))
	js := embeddedJetStream(t, nodes[0])
	names := []string{queue.StreamName, queue.ParkStreamName, events.StreamName, "KV_" + bounce.StateBucket,
		"KV_" + bounce.SuppressBucket, "KV_" + submit.AuthBucket, "KV_" + queue.RetryBucket}
	for _, name := range names {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		info := s.CachedInfo()
		if info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
			t.Fatalf("stream %s: %d replicas, cluster %+v", name, info.Config.Replicas, info.Cluster)
		}
		if name == queue.StreamName && info.State.Msgs == 0 {
			t.Fatal("the message submitted to node 1 is not in the queue stream seen from node 0")
		}
	}
	cancel()
	for range logs {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("serve: %v", err)
			}
		case <-time.After(2 * time.Minute):
			t.Fatal("a node did not stop")
		}
	}
}

// waitServeLog polls l until it contains s (or fails after two minutes).
func waitServeLog(t *testing.T, l *syncBuffer, s string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(l.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s in the log:\n%s", s, l)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// embeddedJetStream connects to a node's embedded client port.
func embeddedJetStream(t *testing.T, c testRelayConfig) jetstream.JetStream {
	t.Helper()
	pass, err := os.ReadFile(filepath.Join(c.dir, "data", queue.PasswordFileName))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect("nats://"+c.natsAddr, nats.UserInfo(queue.EmbeddedUser, strings.TrimSpace(string(pass))))
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

// TestServeStopsWhileWaiting: a node alone in its cluster waits, and
// SIGTERM (the serve context ending) then stops it cleanly.
func TestServeStopsWhileWaiting(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "cluster.password")
	if err := os.WriteFile(secret, []byte("route-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := writeRelayConfig(t)
	cfg := clusterNodeConfig(t, 0, []int{freePort(t), freePort(t), freePort(t)}, secret, c)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	buf := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, zerolog.New(buf), stdio{nil, buf, buf}) }()
	waitServeLog(t, buf, `"event":"nats_waiting"`)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("serve did not stop")
	}
	if !strings.Contains(buf.String(), "jetrelay stopped before JetStream was ready") {
		t.Fatalf("log:\n%s", buf)
	}
}
