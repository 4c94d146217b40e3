// Tests of jetrelay's block size cap and cache expiry (PATCHES.md, patch 0003).

package server

import (
	"bytes"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// blockCapServer starts a server with the given caps (zero: upstream's).
func blockCapServer(t *testing.T, maxBlock uint64, cacheExpire, fssExpire time.Duration) (*Server, nats.JetStreamContext) {
	t.Helper()
	opts := &Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, JetStream: true,
		StoreDir: t.TempDir(), StreamMaxBlockSize: maxBlock, StreamCacheExpire: cacheExpire,
		StreamSubjectStateExpire: fssExpire}
	s, err := NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		t.Fatal("server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := nc.JetStream(nats.MaxWait(60 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return s, js
}

func streamStore(t *testing.T, s *Server, name string) *fileStore {
	t.Helper()
	mset, err := s.GlobalAccount().lookupStream(name)
	if err != nil {
		t.Fatal(err)
	}
	return mset.store.(*fileStore)
}

// The cap lowers every block size the store or the stream's auto-tuning
// would choose above it, never raises a smaller one, and the expiries
// replace the 10 s and 2 min defaults; without the options upstream's
// values stay.
func TestStreamMaxBlockSizeAndCacheExpire(t *testing.T) {
	streams := []nats.StreamConfig{
		{Name: "LIM", Subjects: []string{"lim.>"}, MaxBytes: 1 << 30},                                  // upstream: 8 MiB
		{Name: "WQ", Subjects: []string{"wq.>"}, Retention: nats.WorkQueuePolicy},                      // 4 MiB
		{Name: "KV", Subjects: []string{"kv.>"}, MaxMsgsPerSubject: 1},                                 // 4 MiB
		{Name: "EVT", Subjects: []string{"evt.>"}},                                                     // 8 MiB (limits, no max)
		{Name: "SMALL", Subjects: []string{"small.>"}, MaxBytes: 64000, Discard: nats.DiscardOld},      // 32,000
		{Name: "MID", Subjects: []string{"mid.>"}, MaxBytes: 2 << 20, Retention: nats.WorkQueuePolicy}, // 4 MiB
	}
	for _, tc := range []struct {
		name             string
		maxBlock         uint64
		expire, fssExp   time.Duration
		want             map[string]uint64
		wantExp, wantFss time.Duration
	}{
		{"upstream", 0, 0, 0, map[string]uint64{"LIM": defaultLargeBlockSize, "WQ": defaultMediumBlockSize,
			"KV": defaultKVBlockSize, "EVT": defaultLargeBlockSize, "SMALL": FileStoreMinBlkSize,
			"MID": defaultMediumBlockSize}, defaultCacheBufferExpiration, defaultFssExpiration},
		{"capped", 1 << 20, 2 * time.Second, 15 * time.Second, map[string]uint64{"LIM": 1 << 20, "WQ": 1 << 20,
			"KV": 1 << 20, "EVT": 1 << 20, "SMALL": FileStoreMinBlkSize, "MID": 1 << 20},
			2 * time.Second, 15 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, js := blockCapServer(t, tc.maxBlock, tc.expire, tc.fssExp)
			for _, cfg := range streams {
				cfg.Storage = nats.FileStorage
				if _, err := js.AddStream(&cfg); err != nil {
					t.Fatalf("add stream %s: %v", cfg.Name, err)
				}
				fs := streamStore(t, s, cfg.Name)
				fs.mu.RLock()
				bs, exp, fexp := fs.fcfg.BlockSize, fs.fcfg.CacheExpire, fs.fcfg.SubjectStateExpire
				fs.mu.RUnlock()
				if bs != tc.want[cfg.Name] {
					t.Errorf("stream %s: block size %d, want %d", cfg.Name, bs, tc.want[cfg.Name])
				}
				if exp != tc.wantExp {
					t.Errorf("stream %s: cache expiry %v, want %v", cfg.Name, exp, tc.wantExp)
				}
				if fexp != tc.wantFss {
					t.Errorf("stream %s: subject state expiry %v, want %v", cfg.Name, fexp, tc.wantFss)
				}
			}
		})
	}
}

// Under the cap the store really rolls blocks at that size, and every
// message reads back whole once every block's cache is dropped.
func TestStreamMaxBlockSizeRollsBlocks(t *testing.T) {
	s, js := blockCapServer(t, 256<<10, time.Second, 0)
	if _, err := js.AddStream(&nats.StreamConfig{Name: "LIM", Subjects: []string{"lim.>"},
		Storage: nats.FileStorage}); err != nil {
		t.Fatal(err)
	}
	body := bytes.Repeat([]byte("0123456789abcdef"), 100<<10/16) // 100 KiB
	const n = 12
	for i := 0; i < n; i++ {
		if _, err := js.Publish("lim.x", body); err != nil {
			t.Fatal(err)
		}
	}
	fs := streamStore(t, s, "LIM")
	if blks := fs.numMsgBlocks(); blks < n/2 {
		t.Fatalf("%d × 100 KiB under a 256 KiB cap went into %d block(s), want at least %d", n, blks, n/2)
	}
	fs.mu.RLock()
	for _, mb := range fs.blks {
		mb.mu.Lock()
		mb.clearCacheAndOffset()
		mb.mu.Unlock()
	}
	fs.mu.RUnlock()
	for seq := uint64(1); seq <= n; seq++ {
		sm, err := fs.LoadMsg(seq, nil)
		if err != nil {
			t.Fatalf("load %d: %v", seq, err)
		}
		if !bytes.Equal(sm.msg, body) {
			t.Fatalf("message %d read back with %d bytes, want the %d published", seq, len(sm.msg), len(body))
		}
	}
}

// A block's per-subject state is dropped once it was not touched for
// StreamSubjectStateExpire, and rebuilt whole on the next access: lookups
// by subject, the subject counts and a delete still give upstream's
// answers.
func TestStreamSubjectStateExpires(t *testing.T) {
	s, js := blockCapServer(t, 256<<10, 100*time.Millisecond, 300*time.Millisecond)
	if _, err := js.AddStream(&nats.StreamConfig{Name: "LIM", Subjects: []string{"lim.>"},
		Storage: nats.FileStorage}); err != nil {
		t.Fatal(err)
	}
	body := bytes.Repeat([]byte("0123456789abcdef"), 100<<10/16) // 100 KiB
	subjects := []string{"lim.a", "lim.b", "lim.c", "lim.d", "lim.e", "lim.f"}
	for _, subj := range subjects {
		if _, err := js.Publish(subj, body); err != nil {
			t.Fatal(err)
		}
	}
	fs := streamStore(t, s, "LIM")
	fs.mu.RLock()
	first := fs.blks[0]
	fs.mu.RUnlock()
	deadline := time.Now().Add(30 * time.Second)
	for {
		first.mu.RLock()
		dropped := first.fss == nil
		first.mu.RUnlock()
		if dropped {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first block's subject state was still held 30 s after its last access")
		}
		time.Sleep(20 * time.Millisecond) // polling a condition, with a deadline
	}
	sm, err := fs.LoadLastMsg("lim.a", nil)
	if err != nil || sm.seq != 1 || !bytes.Equal(sm.msg, body) {
		t.Fatalf("last message of lim.a after the subject state was dropped: %v, %v", sm, err)
	}
	st := fs.SubjectsState("lim.>")
	if len(st) != len(subjects) {
		t.Fatalf("%d subjects after the subject state was dropped, want %d", len(st), len(subjects))
	}
	for _, subj := range subjects {
		if st[subj].Msgs != 1 {
			t.Fatalf("subject %s holds %d messages, want 1", subj, st[subj].Msgs)
		}
	}
	if removed, err := fs.RemoveMsg(2); err != nil || !removed {
		t.Fatalf("remove message 2: %v, %v", removed, err)
	}
	if st := fs.SubjectsState("lim.b"); st["lim.b"].Msgs != 0 {
		t.Fatalf("lim.b holds %d messages after its one was removed", st["lim.b"].Msgs)
	}
}
