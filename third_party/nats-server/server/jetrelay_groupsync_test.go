// Tests of jetrelay's group-commit patch (PATCHES.md, patch 0001).

package server

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

func groupSyncStore(t *testing.T, syncAlways bool) *fileStore {
	t.Helper()
	fs, err := newFileStore(
		FileStoreConfig{StoreDir: t.TempDir(), BlockSize: 1024, SyncAlways: syncAlways},
		StreamConfig{Name: "gs", Subjects: []string{"gs.>"}, Storage: FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Stop() })
	return fs
}

func unsyncedBlocks(fs *fileStore) (n int) {
	fs.mu.RLock()
	defer fs.mu.RUnlock()
	for _, mb := range fs.blks {
		mb.mu.RLock()
		if mb.needSync {
			n++
		}
		mb.mu.RUnlock()
	}
	return n
}

// Inside a group every write leaves its block to be synced (across block
// boundaries); endGroupSync syncs each of them and leaves none behind.
// Outside a group a SyncAlways store syncs every write as upstream does.
func TestGroupSyncDefersAndSyncsEveryBlock(t *testing.T) {
	fs := groupSyncStore(t, true)
	msg := make([]byte, 300)
	if _, _, err := fs.StoreMsg("gs.a", nil, msg, 0); err != nil {
		t.Fatal(err)
	}
	if n := unsyncedBlocks(fs); n != 0 {
		t.Fatalf("outside a group %d block(s) were left unsynced", n)
	}
	if !fs.beginGroupSync() {
		t.Fatal("beginGroupSync refused a SyncAlways store")
	}
	for i := 0; i < 10; i++ { // ~3 messages per 1 KiB block: the group spans several
		if _, _, err := fs.StoreMsg("gs.b", nil, msg, 0); err != nil {
			t.Fatal(err)
		}
	}
	fs.mu.RLock()
	blocks := len(fs.blks)
	fs.mu.RUnlock()
	if blocks < 3 {
		t.Fatalf("the group wrote %d block(s), want several", blocks)
	}
	if n := unsyncedBlocks(fs); n < 3 {
		t.Fatalf("inside the group %d block(s) await their sync, want every block written (≥ 3)", n)
	}
	if err := fs.endGroupSync(); err != nil {
		t.Fatal(err)
	}
	if n := unsyncedBlocks(fs); n != 0 {
		t.Fatalf("after endGroupSync %d block(s) are unsynced", n)
	}
	if _, _, err := fs.StoreMsg("gs.c", nil, msg, 0); err != nil {
		t.Fatal(err)
	}
	if n := unsyncedBlocks(fs); n != 0 {
		t.Fatalf("after the group a write was left unsynced (%d block(s))", n)
	}
	if st := fs.State(); st.Msgs != 12 {
		t.Fatalf("store holds %d messages, want 12", st.Msgs)
	}
}

func TestGroupSyncOnlyForSyncAlways(t *testing.T) {
	if groupSyncStore(t, false).beginGroupSync() {
		t.Fatal("beginGroupSync accepted a store that does not sync every write")
	}
}

// A failed sync at the end of a group is reported and makes the store
// refuse further writes: what the group stored must not be acknowledged.
func TestGroupSyncFailureIsAWriteError(t *testing.T) {
	fs := groupSyncStore(t, true)
	if !fs.beginGroupSync() {
		t.Fatal("beginGroupSync refused")
	}
	if _, _, err := fs.StoreMsg("gs.a", nil, []byte("x"), 0); err != nil {
		t.Fatal(err)
	}
	fs.mu.RLock()
	lmb := fs.lmb
	fs.mu.RUnlock()
	lmb.mu.Lock()
	lmb.mfd.Close() // the fd stays set: its Sync fails
	lmb.mu.Unlock()
	if err := fs.endGroupSync(); err == nil {
		t.Fatal("endGroupSync reported no error for a block whose sync failed")
	}
	if _, _, err := fs.StoreMsg("gs.a", nil, []byte("y"), 0); err == nil {
		t.Fatal("the store accepted a write after a failed group sync")
	}
	if fs.beginGroupSync() {
		t.Fatal("beginGroupSync accepted a store with a write error")
	}
}

// End to end through the stream's loop: many publishers at once on a
// SyncAlways server. Every publish is acknowledged, some batches were
// committed as groups, and after a restart every acknowledged message is
// there in order of its sequence.
func TestGroupSyncStreamAcknowledgesEveryPublish(t *testing.T) {
	dir := t.TempDir()
	start := func() *Server {
		opts := &Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, JetStream: true,
			StoreDir: dir, SyncAlways: true}
		s, err := NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		go s.Start()
		if !s.ReadyForConnections(30 * time.Second) {
			t.Fatal("server not ready")
		}
		return s
	}
	s := start()
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	js, err := nc.JetStream(nats.MaxWait(60 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.AddStream(&nats.StreamConfig{Name: "GS", Subjects: []string{"gs.>"}, Storage: nats.FileStorage}); err != nil {
		t.Fatal(err)
	}
	mset, err := s.GlobalAccount().lookupStream("GS")
	if err != nil {
		t.Fatal(err)
	}
	fs := mset.store.(*fileStore)

	const publishers, each = 16, 100
	var wg sync.WaitGroup
	errs := make(chan error, publishers)
	for p := 0; p < publishers; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				id := fmt.Sprintf("%d-%d", p, i)
				if _, err := js.Publish("gs."+id, []byte(id), nats.MsgId(id)); err != nil {
					errs <- fmt.Errorf("publish %s: %w", id, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if fs.groupCmts.Load() == 0 {
		t.Fatal("16 publishers at once never formed a group commit")
	}
	if n := unsyncedBlocks(fs); n != 0 {
		t.Fatalf("%d block(s) left unsynced after every publish was acknowledged", n)
	}
	t.Logf("%d publishes, %d group commits storing %d messages", publishers*each,
		fs.groupCmts.Load(), fs.groupMsgs.Load())
	nc.Close()
	s.Shutdown()
	s.WaitForShutdown()

	s = start()
	defer func() { s.Shutdown(); s.WaitForShutdown() }()
	mset, err = s.GlobalAccount().lookupStream("GS")
	if err != nil {
		t.Fatal(err)
	}
	if st := mset.state(); st.Msgs != publishers*each {
		t.Fatalf("after a restart the stream holds %d messages, want %d", st.Msgs, publishers*each)
	}
}
