package queue

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// testCluster is three nats-servers on loopback, clustered over routes,
// each storing under its own data dir's nats/ like the embedded server.
type testCluster struct {
	dirs  [3]string
	ports [3]int
}

func newTestCluster(t *testing.T, dir0 string) *testCluster {
	t.Helper()
	c := &testCluster{dirs: [3]string{dir0, t.TempDir(), t.TempDir()}}
	for i := range c.ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		c.ports[i] = l.Addr().(*net.TCPAddr).Port
		l.Close()
	}
	return c
}

// clusterOptions is node i's ClusterOptions (what prepareStore sees).
func (c *testCluster) clusterOptions(i int) *ClusterOptions {
	co := &ClusterOptions{Name: "jrtest", Listen: fmt.Sprintf("127.0.0.1:%d", c.ports[i])}
	for _, p := range c.ports {
		co.Routes = append(co.Routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	return co
}

// start runs node i and returns it with a JetStream handle on it; the
// server is shut down at test end (or earlier by the caller).
func (c *testCluster) start(t *testing.T, i int) (*server.Server, jetstream.JetStream) {
	t.Helper()
	co := c.clusterOptions(i)
	var routes []*url.URL
	for _, r := range co.Routes {
		u, _ := url.Parse(r)
		routes = append(routes, u)
	}
	ns, err := server.NewServer(&server.Options{
		ServerName: fmt.Sprintf("n%d", i), JetStream: true, StoreDir: filepath.Join(c.dirs[i], storeDirName),
		Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true, MaxPayload: embeddedMaxPayload,
		Users:   []*server.User{{Username: EmbeddedUser, Password: "pw"}},
		Cluster: server.ClusterOpts{Name: co.Name, Host: "127.0.0.1", Port: c.ports[i]},
		Routes:  routes, JetStreamMaxMemory: 64 << 20,
	})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(30 * time.Second) {
		t.Fatalf("node %d did not start", i)
	}
	nc, err := nats.Connect("", nats.InProcessServer(ns), nats.UserInfo(EmbeddedUser, "pw"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return ns, js
}

// waitMeta polls until JetStream answers on js (the cluster has a meta leader).
func waitMeta(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := js.AccountInfo(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no JetStream cluster: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// migrateNode0 runs node 0 as the migrating node: prepareStore (export,
// aside), the clustered server, then the import with cfg.
func (c *testCluster) migrateNode0(t *testing.T, cfg importConfig) (*server.Server, jetstream.JetStream, error) {
	t.Helper()
	opts := Options{DataDir: c.dirs[0], Replicas: 3, Cluster: c.clusterOptions(0), Logger: mtLogger(t)}
	if err := prepareStore(opts); err != nil {
		t.Fatal(err)
	}
	ns, js := c.start(t, 0)
	waitMeta(t, js)
	q := &Queue{opts: opts, log: opts.Logger, ns: ns, js: js}
	if cfg.abortAfter > 0 {
		return ns, js, q.importExport(mtCtx(t), cfg)
	}
	return ns, js, q.importPending(mtCtx(t))
}

// TestMigrateIntoCluster moves a standalone store with queued mail into a
// three-node cluster: every message once in R3 streams, the standalone
// store kept aside, nothing left of the migration's files.
func TestMigrateIntoCluster(t *testing.T) {
	dir := t.TempDir()
	want := fillStandalone(t, dir)
	c := newTestCluster(t, dir)
	c.start(t, 1)
	c.start(t, 2)
	_, js, err := c.migrateNode0(t, importConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := mtCtx(t)
	sameSnapshot(t, want, snapshot(t, ctx, js))
	checkTTL(t, ctx, js)
	for _, name := range []string{StreamName, ParkStreamName, "KV_" + mtSuppress, "KV_" + mtBounce, mtEvents} {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if r := s.CachedInfo().Config.Replicas; r != 3 {
			t.Errorf("%s: %d replicas, want 3", name, r)
		}
	}
	checkMigrated(t, dir)
}

// checkMigrated: the standalone store is kept aside, the store in use is
// clustered, and the migration's own files are gone.
func checkMigrated(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	aside := 0
	for _, e := range entries {
		switch {
		case strings.HasPrefix(e.Name(), asideDirPrefix):
			aside++
			if !standaloneData(filepath.Join(dir, e.Name())) {
				t.Errorf("%s does not hold the standalone store", e.Name())
			}
		case strings.HasPrefix(e.Name(), "nats-migrate"), e.Name() == migratingDirName:
			t.Errorf("%s left behind", e.Name())
		}
	}
	if aside != 1 {
		t.Errorf("%d standalone stores kept aside, want 1", aside)
	}
	if standaloneData(filepath.Join(dir, storeDirName)) {
		t.Error("the clustered store is taken for a standalone one")
	}
}

// TestMigrateCrashResume stops the import, as a kill -9 would, after a
// window was stored but before its progress was recorded, restarts the
// node and finishes: every message once.
func TestMigrateCrashResume(t *testing.T) {
	dir := t.TempDir()
	want := fillStandalone(t, dir)
	c := newTestCluster(t, dir)
	c.start(t, 1)
	c.start(t, 2)
	// Streams in name order: JETRELAY_EVENTS (5), JETRELAY_PARKED (1), ...
	// The abort comes after PARKED's window: EVENTS recorded, PARKED not.
	ns, _, err := c.migrateNode0(t, importConfig{abortAfter: 6})
	if !errors.Is(err, errImportAborted) {
		t.Fatalf("import with abortAfter: %v", err)
	}
	ns.Shutdown()
	ns.WaitForShutdown()
	if p := readProgress(filepath.Join(dir, progressFileName), exportID(t, dir)); p != 5 {
		t.Fatalf("progress after the abort: %d, want 5", p)
	}
	if _, err := os.Stat(filepath.Join(dir, exportFileName)); err != nil {
		t.Fatalf("export gone before the import finished: %v", err)
	}
	_, js, err := c.migrateNode0(t, importConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := mtCtx(t)
	sameSnapshot(t, want, snapshot(t, ctx, js))
	checkMigrated(t, dir)
}

// exportID reads the id of data_dir's export.
func exportID(t *testing.T, dir string) string {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, exportFileName))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rr, err := newRecordReader(f)
	if err != nil {
		t.Fatal(err)
	}
	_, p, err := rr.next()
	if err != nil {
		t.Fatal(err)
	}
	return strings.SplitN(strings.TrimPrefix(string(p), `{"id":"`), `"`, 2)[0]
}
