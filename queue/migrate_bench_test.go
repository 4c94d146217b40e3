package queue

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
)

// BenchmarkMigrate100k exports a standalone store holding 100,000 ready
// entries (1 KiB inline bodies) and imports it into another store, and
// reports the largest heap seen meanwhile: the migration streams, its
// memory does not grow with the queue. Run it once:
//
//	go test ./queue -run '^$' -bench Migrate100k -benchtime 1x
func BenchmarkMigrate100k(b *testing.B) {
	const entries = 100_000
	for range b.N {
		src, dst := b.TempDir(), b.TempDir()
		ctx := context.Background()
		log := zerolog.Nop()
		q, err := Open(ctx, Options{DataDir: src, Logger: log})
		if err != nil {
			b.Fatal(err)
		}
		body := make([]byte, 1024)
		for i := range entries {
			m := nats.NewMsg(fmt.Sprintf("jr.q.%020d.bench%d.example", i, i%100))
			m.Header.Set(HeaderEnv, `{"from":"app@example.com","rcpts":[{"addr":"u@example.com"}]}`)
			m.Data = body
			if _, err := q.js.PublishMsgAsync(m); err != nil {
				b.Fatal(err)
			}
			if i%1000 == 999 {
				<-q.js.PublishAsyncComplete()
			}
		}
		<-q.js.PublishAsyncComplete()
		q.Close()
		dq, err := Open(ctx, Options{DataDir: dst, Logger: log})
		if err != nil {
			b.Fatal(err)
		}
		var peak atomic.Uint64
		stop := make(chan struct{})
		go samplePeak(&peak, stop)
		b.ResetTimer()
		start := time.Now()
		end, err := exportStandalone(filepath.Join(src, storeDirName), filepath.Join(dst, exportFileName), log)
		if err != nil || end.Messages < entries {
			b.Fatalf("export: %+v, %v", end, err)
		}
		exported := time.Since(start)
		if err := dq.importExport(ctx, importConfig{}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		close(stop)
		info, err := dq.stream.Info(ctx)
		if err != nil || info.State.Msgs != entries {
			b.Fatalf("imported %d messages, want %d (%v)", info.State.Msgs, entries, err)
		}
		dq.Close()
		b.ReportMetric(exported.Seconds(), "export_s")
		b.ReportMetric(float64(peak.Load())/(1<<20), "peak_heap_MiB")
	}
}

func samplePeak(peak *atomic.Uint64, stop chan struct{}) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	var ms runtime.MemStats
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > peak.Load() {
				peak.Store(ms.HeapAlloc)
			}
		}
	}
}
