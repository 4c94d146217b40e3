package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/relay/devtools/testport"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// clusterLog is a log destination tests can search while servers write to it.
type clusterLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *clusterLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String is everything written so far.
func (l *clusterLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *clusterLog) has(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Contains(l.b.String(), s)
}

// clusterPorts returns n distinct loopback ports reserved for the test
// (see testport: picked and released :0 ports were taken by other tests'
// servers in CI).
func clusterPorts(t *testing.T, n int) []int { return testport.Ports(t, n) }

// clusterNode is the Options of node i of a test cluster on ports, every
// node routing to every port (its own included).
func clusterNode(t *testing.T, i int, ports []int, secret string, log *clusterLog) Options {
	var routes []string
	for _, p := range ports {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	return Options{
		DataDir:    t.TempDir(),
		Replicas:   len(ports),
		ServerName: fmt.Sprintf("node-%d", i),
		Logger:     zerolog.New(log).With().Str("node", fmt.Sprint(i)).Logger(),
		Name:       fmt.Sprintf("test node %d", i),
		Cluster: &ClusterOptions{
			Name: "test", Listen: fmt.Sprintf("127.0.0.1:%d", ports[i]), Routes: routes, Password: secret,
		},
	}
}

type clusterOpenResult struct {
	q   *Queue
	err error
}

// clusterOpenAsync runs Open in the background; the queue is closed at test end.
func clusterOpenAsync(t *testing.T, ctx context.Context, o Options) <-chan clusterOpenResult {
	ch := make(chan clusterOpenResult, 1)
	go func() {
		q, err := Open(ctx, o)
		ch <- clusterOpenResult{q, err}
	}()
	return ch
}

func clusterWait(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestEmbeddedClusterFormsR3: three embedded servers routed to each other
// (each route list naming the node itself too) form one JetStream
// cluster. The first node's Open waits (logging event=nats_waiting) while
// it is alone instead of failing, and every stream and bucket the queue
// creates has three replicas.
func TestEmbeddedClusterFormsR3(t *testing.T) {
	ports := clusterPorts(t, 3)
	log := &clusterLog{}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var qs []*Queue
	t.Cleanup(func() {
		for _, q := range qs {
			q.Close()
		}
	})
	first := clusterOpenAsync(t, ctx, clusterNode(t, 0, ports, "route-secret", log))
	clusterWait(t, time.Minute, "the first node to log that it waits", func() bool {
		return log.has(`"event":"nats_waiting"`)
	})
	select {
	case r := <-first:
		t.Fatalf("the first node's Open returned while it was alone: %v", r.err)
	default:
	}
	if !log.has("waiting for the JetStream cluster: 1 of 3 nodes seen") {
		t.Errorf("the wait does not say how many nodes are seen:\n%s", log.String())
	}
	second := clusterOpenAsync(t, ctx, clusterNode(t, 1, ports, "route-secret", log))
	third := clusterOpenAsync(t, ctx, clusterNode(t, 2, ports, "route-secret", log))
	for i, ch := range []<-chan clusterOpenResult{first, second, third} {
		r := <-ch
		if r.err != nil {
			t.Fatalf("node %d: Open: %v\nlog:\n%s", i, r.err, log.String())
		}
		qs = append(qs, r.q)
	}
	for _, name := range []string{StreamName, ParkStreamName, "KV_" + RetryBucket} {
		s, err := qs[0].JetStream().Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
			t.Fatalf("stream %s: replicas %d, cluster %+v; want 3 replicas (a leader and 2 peers)",
				name, info.Config.Replicas, info.Cluster)
		}
	}
	if log.has("nats_route_auth_failed") {
		t.Errorf("route auth failures with one secret:\n%s", log.String())
	}
}

// TestRouteSecretMismatch: nodes with different route secrets form no
// cluster, and the log says that the route secret is the cause.
func TestRouteSecretMismatch(t *testing.T) {
	ports := clusterPorts(t, 2)
	log := &clusterLog{}
	a, _, err := startEmbedded(clusterNode(t, 0, ports, "secret-a", log))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { a.Shutdown(); a.WaitForShutdown() }()
	b, _, err := startEmbedded(clusterNode(t, 1, ports, "secret-b", log))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { b.Shutdown(); b.WaitForShutdown() }()
	clusterWait(t, time.Minute, "a route auth failure in the log", func() bool {
		return log.has(`"event":"nats_route_auth_failed"`) && log.has("nats.cluster.password_file")
	})
	// A refused route may be counted for the moment between its connect
	// and the refusal: what must hold is that none stays.
	clusterWait(t, time.Minute, "no route between nodes with different secrets", func() bool {
		return a.NumRoutes() == 0 && b.NumRoutes() == 0
	})
}

// TestOpenStopsWaitingOnCancel: a node alone in a three-node cluster waits
// in Open until its context ends, then returns the context's error (and
// has shut its server down).
func TestOpenStopsWaitingOnCancel(t *testing.T) {
	ports := clusterPorts(t, 3)
	log := &clusterLog{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := clusterOpenAsync(t, ctx, clusterNode(t, 0, ports, "route-secret", log))
	clusterWait(t, time.Minute, "the node to log that it waits", func() bool {
		return log.has(`"event":"nats_waiting"`)
	})
	cancel()
	select {
	case r := <-ch:
		if r.err == nil || !errors.Is(r.err, context.Canceled) {
			t.Fatalf("Open after cancel: %v", r.err)
		}
		if strings.Contains(r.err.Error(), "2.12") {
			t.Fatalf("a wait blames the server version: %v", r.err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Open did not return after its context was cancelled")
	}
}

// TestAwaitTransientErrors: which errors Await waits out.
func TestAwaitTransientErrors(t *testing.T) {
	cases := []struct {
		err  error
		want bool
	}{
		{context.DeadlineExceeded, true},
		{fmt.Errorf("create stream: %w", &jetstream.APIError{Code: 503, ErrorCode: 10008,
			Description: "JetStream system temporarily unavailable"}), true},
		{&jetstream.APIError{Code: 500, ErrorCode: 10023, Description: "insufficient resources"}, true},
		{&jetstream.APIError{Code: 400, ErrorCode: 10005, Description: "no suitable peers for placement"}, true},
		{&jetstream.APIError{Code: 400, ErrorCode: 10058, Description: "stream name already in use"}, false},
		{&jetstream.APIError{Code: 500, ErrorCode: 10074,
			Description: "replicas > 1 not supported in non-clustered mode"}, false},
		{errors.New("bounce.key: permission denied"), false},
	}
	for _, c := range cases {
		if got := Transient(c.err); got != c.want {
			t.Errorf("Transient(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

// TestAwaitFailsAtOnceOnPermanentError: a stream configuration the server
// refuses is not waited out.
func TestAwaitFailsAtOnceOnPermanentError(t *testing.T) {
	calls := 0
	bad := &jetstream.APIError{Code: 400, ErrorCode: 10058, Description: "stream name already in use"}
	err := Await(context.Background(), zerolog.Nop(), "stream X", func(context.Context) error {
		calls++
		return bad
	})
	if !errors.Is(err, bad) || calls != 1 {
		t.Fatalf("err %v after %d calls", err, calls)
	}
	calls = 0
	err = Await(context.Background(), zerolog.Nop(), "stream X", func(context.Context) error {
		if calls++; calls < 3 {
			return context.DeadlineExceeded
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("err %v after %d calls", err, calls)
	}
}

// TestStandaloneStoreKeepsStreamsOverRename: a standalone server's store
// does not depend on the server name, so the change from the old fixed
// name to nats.server_name's default keeps the queue.
func TestStandaloneStoreKeepsStreamsOverRename(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	q, err := Open(ctx, Options{DataDir: dir, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := q.JetStream().Publish(ctx, SubjHeld+".test.example.com", []byte("x")); err != nil {
		t.Fatal(err)
	}
	q.Close()
	q, err = Open(ctx, Options{DataDir: dir, ServerName: "relay-a-4222", Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	s, err := q.Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil || info.State.Msgs != 1 {
		t.Fatalf("after the rename: %+v, %v", info, err)
	}
}
