package clustertest

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// binDir holds the binaries built once for every test of the package.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "jetrelay-clustertest-")
	if err != nil {
		panic(err)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var (
	buildOnce sync.Once
	buildErr  error
)

// binaries builds jetrelay and nats-server once (concurrently) and returns
// their paths.
func binaries(t *testing.T) (jetrelay, natsServer string) {
	t.Helper()
	jetrelay, natsServer = filepath.Join(binDir, "jetrelay"), filepath.Join(binDir, "nats-server")
	buildOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		errs := make(chan error, 2)
		go func() { errs <- GoBuild(ctx, jetrelay, JetrelayPkg) }()
		go func() { errs <- GoBuild(ctx, natsServer, NATSServerPkg) }()
		for i := 0; i < 2; i++ {
			if err := <-errs; err != nil && buildErr == nil {
				buildErr = err
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return jetrelay, natsServer
}

// alone is how long the first node runs before the others start: it must
// wait for them meanwhile, not exit.
const alone = 5 * time.Second

// startCluster starts a sink and a cluster with o (Bin, Dir, SinkAddr,
// User and Pass filled in), the first node alone for a while, and waits
// until every node is ready.
func startCluster(t *testing.T, o Options) (*Cluster, *Sink) {
	t.Helper()
	o.Bin, _ = binaries(t)
	sink, err := StartSink("0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	o.Dir, o.SinkAddr, o.User, o.Pass = t.TempDir(), sink.Addr, "fault", "fault-pass-1"
	c, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		if t.Failed() {
			for _, n := range c.Nodes {
				t.Logf("--- %s log (tail):\n%s\n--- %s warnings and errors (last 40):\n%s",
					n.Name, n.LogTail(6000), n.Name, n.LogProblems(40))
			}
		}
	})
	// The first node starts alone and must wait for the others, not exit.
	if err := c.Nodes[0].Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(alone); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if c.Nodes[0].Exited() {
			t.Fatalf("%s exited while waiting for the other nodes:\n%s", c.Nodes[0].Name, c.Nodes[0].LogTail(4000))
		}
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return c, sink
}

// TestClusterFaults: three jetrelay processes (embedded NATS cluster, R3)
// under load: kill -9 of the queue stream's leader and its restart, the
// same for a node that leads nothing, a rolling restart, quorum loss and
// its return. Every accepted message is
// delivered, no reply is a 5xx or takes over 15 s on a node that was not
// stopped, 250s resume within 30 s, and duplicates stay within what the
// stopped nodes had in flight (Report.DupBound).
func TestClusterFaults(t *testing.T) {
	c, sink := startCluster(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	// Two rounds: kill -9 of the queue stream's leader, then of a node
	// that does not lead it (its death must not cost the others 451s).
	rep := (&Scenario{C: c, Sink: sink, Logf: t.Logf, Rounds: 2, Rate: 10, Messages: 500}).Run(ctx)
	logReport(t, rep)
	for _, p := range rep.Problems {
		t.Error(p)
	}
}

func logReport(t *testing.T, rep Report) {
	t.Helper()
	t.Logf("sent %d, accepted %d, refused 4xx %d, connection errors %d; delivered %d (not delivered %d, duplicates %d, bound %d, "+
		"delivered without a 250 %d); resume after leader kill %v, after quorum return %v; longest reply %v; "+
		"longest 250-to-delivery %v; 451 4.3.0 without quorum %d",
		rep.Sent, rep.Accepted, rep.Refused, rep.ConnErrors, rep.Delivered, rep.Lost, rep.Duplicates, rep.DupBound,
		rep.UnacceptedDelivered, rep.Resume, rep.QuorumResume, rep.MaxReply, rep.MaxDelivery, rep.Replies451)
}

// TestExternalNATS: two jetrelay processes on a three-server external
// NATS JetStream cluster (nats-server built from go.mod's version), R3:
// 50 messages in, all delivered.
func TestExternalNATS(t *testing.T) {
	_, natsBin := binaries(t)
	ext, err := StartNATS(natsBin, t.TempDir(), 3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ext.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := ext.WaitJetStream(ctx); err != nil {
		t.Fatal(err)
	}
	c, sink := startCluster(t, Options{Nodes: 2, ExternalURL: ext.URL()})
	load := c.StartLoad(4, 25)
	start := time.Now()
	for load.AcceptedSince(start.Add(-time.Hour), nil) < 50 && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond) // polling the load's progress
	}
	load.Stop()
	accepted := 0
	for _, r := range load.Results() {
		if r.Code >= 500 {
			t.Errorf("5xx via %s at %s: %s", r.Node, r.Stage, r.Err)
		}
		if !r.Accepted() {
			continue
		}
		accepted++
		tag := r.Tag
		for sink.Count(tag) == 0 && ctx.Err() == nil {
			time.Sleep(50 * time.Millisecond) // polling the sink
		}
		if sink.Count(tag) == 0 {
			t.Errorf("accepted %s via %s not delivered", tag, r.Node)
		}
	}
	if accepted < 50 {
		t.Errorf("only %d accepted", accepted)
	}
	t.Logf("external NATS: %d accepted, %d delivered in all", accepted, sink.Total())
}
