// Tests of jetrelay's block size cap and cache expiry (PATCHES.md, patch 0003).

package server

import (
	"bytes"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// blockCapServer starts a server with the given caps (zero: upstream's).
func blockCapServer(t *testing.T, maxBlock uint64, cacheExpire time.Duration) (*Server, nats.JetStreamContext) {
	t.Helper()
	opts := &Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, JetStream: true,
		StoreDir: t.TempDir(), StreamMaxBlockSize: maxBlock, StreamCacheExpire: cacheExpire}
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
// would choose above it, never raises a smaller one, and the expiry
// replaces the 10 s default; without the options upstream's sizes stay.
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
		name     string
		maxBlock uint64
		expire   time.Duration
		want     map[string]uint64
		wantExp  time.Duration
	}{
		{"upstream", 0, 0, map[string]uint64{"LIM": defaultLargeBlockSize, "WQ": defaultMediumBlockSize,
			"KV": defaultKVBlockSize, "EVT": defaultLargeBlockSize, "SMALL": FileStoreMinBlkSize,
			"MID": defaultMediumBlockSize}, defaultCacheBufferExpiration},
		{"capped", 1 << 20, 2 * time.Second, map[string]uint64{"LIM": 1 << 20, "WQ": 1 << 20, "KV": 1 << 20,
			"EVT": 1 << 20, "SMALL": FileStoreMinBlkSize, "MID": 1 << 20}, 2 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, js := blockCapServer(t, tc.maxBlock, tc.expire)
			for _, cfg := range streams {
				cfg.Storage = nats.FileStorage
				if _, err := js.AddStream(&cfg); err != nil {
					t.Fatalf("add stream %s: %v", cfg.Name, err)
				}
				fs := streamStore(t, s, cfg.Name)
				fs.mu.RLock()
				bs, exp := fs.fcfg.BlockSize, fs.fcfg.CacheExpire
				fs.mu.RUnlock()
				if bs != tc.want[cfg.Name] {
					t.Errorf("stream %s: block size %d, want %d", cfg.Name, bs, tc.want[cfg.Name])
				}
				if exp != tc.wantExp {
					t.Errorf("stream %s: cache expiry %v, want %v", cfg.Name, exp, tc.wantExp)
				}
			}
		})
	}
}

// Under the cap the store really rolls blocks at that size, and every
// message reads back whole once every block's cache is dropped.
func TestStreamMaxBlockSizeRollsBlocks(t *testing.T) {
	s, js := blockCapServer(t, 256<<10, time.Second)
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
