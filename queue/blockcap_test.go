package queue

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// TestEmbeddedStoreBlocksCapped: the embedded server writes streams in
// blocks of at most embeddedMaxBlockSize (nats-server alone would give a
// limits stream with a large max_bytes 8 MiB blocks), so a written block's
// cache holds at most that much.
func TestEmbeddedStoreBlocksCapped(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	q, err := Open(ctx, Options{DataDir: dir, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if _, err := q.JetStream().CreateStream(ctx, jetstream.StreamConfig{Name: "BLKCAP",
		Subjects: []string{"blkcap.>"}, MaxBytes: 1 << 30, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	body := bytes.Repeat([]byte("x"), 128<<10)
	const n = 3 * embeddedMaxBlockSize / (128 << 10)
	for i := 0; i < n; i++ {
		if _, err := q.JetStream().Publish(ctx, "blkcap.x", body); err != nil {
			t.Fatal(err)
		}
	}
	blks, err := filepath.Glob(filepath.Join(dir, "nats", "jetstream", "*", "streams", "BLKCAP", "msgs", "*.blk"))
	if err != nil {
		t.Fatal(err)
	}
	if len(blks) < 3 {
		t.Fatalf("%d × 128 KiB (3 MiB) in %d block file(s), want at least 3 of at most %d bytes",
			n, len(blks), embeddedMaxBlockSize)
	}
}
