package submit

import (
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkLargeMessageHeap submits 20 MiB messages on one connection and
// reports the heap: peak-MiB is the highest HeapInuse above the idle heap
// seen while a message is transferred, signed and stored (sampled every
// millisecond; it includes the in-process nats-server storing the message),
// alloc-MiB/msg the bytes allocated per message, held-MiB the most that
// submission's own buffers held at once (its inflight budget, sampled). The
// message is 20 MiB, so three copies would be 60 MiB.
//
//	go test -run x -bench LargeMessageHeap -benchtime 10x ./relay/submit/
func BenchmarkLargeMessageHeap(b *testing.B) {
	const size = 20 << 20
	h := start(b, testConfig(b))
	c := h.login(lnImplicit, appUser, appPass)
	head := "From: <a@example.com>\r\nTo: x@one.test\r\nSubject: large\r\n\r\n"
	line := strings.Repeat("z", 98) + "\r\n"
	msg := []byte(head + strings.Repeat(line, (size-len(head))/len(line)) + ".\r\n")
	var peak atomic.Uint64
	var held int64 // peak of what submission charged to its inflight budget
	stop := make(chan struct{})
	done := make(chan struct{})
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	idle, allocs := ms.HeapInuse, ms.TotalAlloc
	go func() {
		defer close(done)
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		var m runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				runtime.ReadMemStats(&m)
				if m.HeapInuse > peak.Load() {
					peak.Store(m.HeapInuse)
				}
				held = max(held, h.srv.inflight.used.Load())
			}
		}
	}()
	b.SetBytes(size)
	b.ResetTimer()
	for b.Loop() {
		c.send("MAIL FROM:<a@example.com>\r\nRCPT TO:<x@one.test>\r\nDATA\r\n")
		for _, want := range []int{250, 250, 354} {
			if r := c.read(); r.Code != want {
				b.Fatalf("got %v, want %d", r, want)
			}
		}
		if _, err := c.conn.Write(msg); err != nil {
			b.Fatal(err)
		}
		if r := c.read(); r.Code != 250 {
			b.Fatalf("end of DATA: %v", r)
		}
	}
	b.StopTimer()
	close(stop)
	<-done
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(peak.Load()-min(idle, peak.Load()))/(1<<20), "peak-MiB")
	b.ReportMetric(float64(ms.TotalAlloc-allocs)/float64(b.N)/(1<<20), "alloc-MiB/msg")
	b.ReportMetric(float64(held)/(1<<20), "held-MiB")
}
