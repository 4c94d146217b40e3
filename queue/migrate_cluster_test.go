package queue

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// migrationCluster opens nodes 1 and 2 of a three-node loopback cluster
// and returns node 0's Options over dir (filled standalone data); Open
// waits for the cluster, so the nodes are opened in the background.
func migrationCluster(t *testing.T, ctx context.Context, dir string) Options {
	t.Helper()
	ports := clusterPorts(t, 3)
	log := zerolog.New(zerolog.NewTestWriter(t))
	for i := 1; i < 3; i++ {
		o := clusterNode(t, i, ports, "route-secret", &clusterLog{})
		o.Logger = log.With().Int("node", i).Logger()
		ch := clusterOpenAsync(t, ctx, o)
		t.Cleanup(func() {
			if r := <-ch; r.q != nil {
				r.q.Close()
			}
		})
	}
	o := clusterNode(t, 0, ports, "route-secret", &clusterLog{})
	o.DataDir, o.Logger = dir, log.With().Int("node", 0).Logger()
	return o
}

// TestMigrateIntoCluster moves a standalone store with queued mail into a
// three-node cluster through the production path (Open with
// nats.cluster): every message once in R3 streams, envelopes and bodies
// unchanged, the standalone store kept aside, nothing left of the
// migration's files.
func TestMigrateIntoCluster(t *testing.T) {
	dir := t.TempDir()
	want := fillStandalone(t, dir)
	ctx := mtCtx(t)
	q, err := Open(ctx, migrationCluster(t, ctx, dir))
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	sameSnapshot(t, want, snapshot(t, ctx, q.js))
	checkTTL(t, ctx, q.js)
	for _, name := range []string{StreamName, ParkStreamName, "KV_" + mtSuppress, "KV_" + mtBounce, mtEvents} {
		s, err := q.js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if r := s.CachedInfo().Config.Replicas; r != 3 {
			t.Errorf("%s: %d replicas, want 3", name, r)
		}
	}
	// The owners' own setup updates what the import created.
	if _, err := q.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: mtSuppress, History: 1,
		TTL: 30 * 24 * time.Hour, Storage: jetstream.FileStorage, Replicas: 3}); err != nil {
		t.Errorf("suppression bucket update after the import: %v", err)
	}
	s, err := q.js.Stream(ctx, mtEvents)
	if err != nil || s.CachedInfo().Config.PersistMode != jetstream.DefaultPersistMode {
		t.Errorf("events stream at three replicas: %v, want the default persist mode", err)
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
// node (Open) and finishes: every message once.
func TestMigrateCrashResume(t *testing.T) {
	dir := t.TempDir()
	want := fillStandalone(t, dir)
	ctx := mtCtx(t)
	o := migrationCluster(t, ctx, dir)
	q, err := Connect(ctx, o) // exports and moves the store aside
	if err != nil {
		t.Fatal(err)
	}
	if err := q.setup(ctx); err != nil { // waits for the cluster
		q.Close()
		t.Fatal(err)
	}
	// Streams go in name order; the abort comes after the auth bucket's
	// keys are stored, before that is recorded: the keys are sent again.
	err = q.importExport(ctx, importConfig{abortIn: "KV_" + mtAuth})
	q.Close()
	if !errors.Is(err, errImportAborted) {
		t.Fatalf("import with abortAfter: %v", err)
	}
	before := 0
	for k := range want {
		if k < "KV_"+mtAuth {
			before++
		}
	}
	if p := readProgress(filepath.Join(dir, progressFileName), exportID(t, dir)); p != before {
		t.Fatalf("progress after the abort: %d, want %d (the messages of the streams before %s)", p, before, mtAuth)
	}
	if _, err := os.Stat(filepath.Join(dir, exportFileName)); err != nil {
		t.Fatalf("export gone before the import finished: %v", err)
	}
	q, err = Open(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	sameSnapshot(t, want, snapshot(t, ctx, q.js))
	checkTTL(t, ctx, q.js)
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
