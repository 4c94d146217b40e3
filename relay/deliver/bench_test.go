package deliver_test

import (
	"bytes"
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/shaping"
	"github.com/rs/zerolog"
)

// BenchmarkRouteDelivery delivers b.N one-recipient 4 KiB messages through
// a smarthost route (no TLS) to a local FakeMX, from the real JetStream
// queue (sync=always) to the sink's 250, acknowledgements included.
func BenchmarkRouteDelivery(b *testing.B) {
	b.Run("sync=always", func(b *testing.B) { benchRoute(b, newHarness(b)) })
	b.Run("sync=1s", func(b *testing.B) {
		h := newHarness(b)
		q, err := queue.Open(context.Background(), queue.Options{DataDir: b.TempDir(), SyncInterval: time.Second,
			Logger: zerolog.Nop()})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(q.Close)
		h.q = q
		benchRoute(b, h)
	})
	// No shaping configured, as cmd runs it: a Shaper with only the
	// default limits (max_per_destination), which touches no bucket.
	b.Run("sync=always,shaper", func(b *testing.B) {
		h := newHarness(b)
		sh, err := shaping.Open(context.Background(), shaping.Options{JetStream: h.q.JetStream(), Node: "n1",
			Logger: zerolog.Nop()}, shaping.Settings{Default: shaping.Limits{Connections: 10}})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(sh.Close)
		h.shaper = sh
		benchRoute(b, h)
	})
}

func benchRoute(b *testing.B, h *harness) {
	h.quiet = true
	sink := h.mx()
	line := []byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd\r\n")
	body := append([]byte("Subject: bench\r\n\r\n"), bytes.Repeat(line, 64)...)
	for i := 0; i < b.N; i++ {
		h.sendBody([]string{"u" + strconv.Itoa(i) + "@bench.test"}, body)
	}
	cfg := h.config()
	cfg.Delivery.Routes = []config.Route{
		{Domains: []string{"*"}, Host: net.JoinHostPort(sink.IP, strconv.Itoa(sink.Port)), TLS: "none"},
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	h.start(cfg)
	for len(sink.Messages()) < b.N {
		time.Sleep(time.Millisecond) // polling the sink, not synchronising the code under test
	}
	for h.streamMsgs() > 0 {
		time.Sleep(5 * time.Millisecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msg/s")
}

// streamMsgs counts every message in the queue stream.
func (h *harness) streamMsgs() int { return int(queuetest.StreamMsgs(h.t, h.q)) }
