package msgindex

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/nats-io/nats.go/jetstream"
)

// benchEvents is the size of the benchmark's events stream.
const benchEvents = 100000

// BenchmarkSearch100k indexes 100,000 events — accepted, delivery
// (delivered, deferred, failed) and dsn, about 40,000 messages accepted
// over the last 24 hours to 200 domains — through the real indexer on an
// embedded nats-server, then times searches.
func BenchmarkSearch100k(b *testing.B) { benchSearch(b, 24*time.Hour) }

// BenchmarkSearch100kOneHour is the same mail accepted within the last
// hour: a busy relay's newest hour (the unfiltered first page reads its
// newest minutes, not the whole hour).
func BenchmarkSearch100kOneHour(b *testing.B) { benchSearch(b, time.Hour) }

func benchSearch(b *testing.B, spread time.Duration) {
	v := newEnv(b, Options{})
	start := time.Now()
	var ms0, ms1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	sample := fillBench(b, v, spread)
	v.run(v.x)
	waitIndexed(b, v)
	runtime.GC()
	runtime.ReadMemStats(&ms1)
	b.Logf("indexed %d events (%d messages) in %s; heap +%d MiB", benchEvents, sample.messages,
		time.Since(start).Round(time.Millisecond), (int64(ms1.HeapAlloc)-int64(ms0.HeapAlloc))>>20)
	for _, name := range []string{"KV_" + Bucket, PostingsStream} {
		st, err := v.js.Stream(context.Background(), name)
		if err != nil {
			b.Fatal(err)
		}
		info, err := st.Info(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		b.Logf("%s: %d messages, %d bytes, %d subjects", name, info.State.Msgs, info.State.Bytes, info.State.NumSubjects)
	}
	page5 := pageCursor(b, v, Query{}, 5)
	domPage3 := pageCursor(b, v, Query{Rcpt: "@d1.test"}, 3)
	cases := []struct {
		name string
		q    Query
	}{
		{"first_page", Query{}},
		{"later_page", Query{Cursor: page5}},
		{"rcpt", Query{Rcpt: sample.rcpt}},
		{"rcpt_no_match", Query{Rcpt: "nobody@nowhere.test"}},
		{"domain", Query{Rcpt: "@d7.test"}},
		{"domain_later_page", Query{Rcpt: "@d1.test", Cursor: domPage3}},
		{"status_failed", Query{Status: StatusFailed}},
		{"meta", Query{Meta: map[string]string{"campaign": "c42"}}},
		{"sender_last_6h", Query{From: sample.from, Since: time.Now().Add(-6 * time.Hour)}},
		{"status_deferred", Query{Status: StatusDeferred}},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			n := 0
			for b.Loop() {
				p, err := v.x.Search(context.Background(), tc.q)
				if err != nil {
					b.Fatal(err)
				}
				n = len(p.Items)
			}
			b.ReportMetric(float64(n), "items")
		})
	}
}

type benchSample struct {
	messages   int
	rcpt, from string
}

// fillBench publishes benchEvents events (asynchronously, bounded).
func fillBench(b *testing.B, v *env, spread time.Duration) benchSample {
	b.Helper()
	rng := rand.New(rand.NewPCG(7, 8))
	now := time.Now().UTC()
	var s benchSample
	p := &asyncPub{b: b, js: v.js, marshal: json.Marshal}
	pub := p.publish
	n := 0
	for n < benchEvents {
		at := now.Add(-time.Duration(rng.Int64N(int64(spread))))
		evs := benchMessage(rng, idAt(at, rng), at)
		for _, e := range evs {
			pub(e)
		}
		n += len(evs)
		s.messages++
		if s.messages == 1000 {
			s.rcpt, s.from = evs[1].Rcpt, *evs[0].MailFrom
		}
	}
	p.wait()
	return s
}

// asyncPub stores events asynchronously, at most 1,000 unacknowledged.
type asyncPub struct {
	b       *testing.B
	js      jetstream.JetStream
	marshal func(any) ([]byte, error)
	futures []jetstream.PubAckFuture
}

func (p *asyncPub) publish(e *events.Event) {
	data, err := p.marshal(e)
	if err != nil {
		p.b.Fatal(err)
	}
	f, err := p.js.PublishAsync(events.Subject(e), data)
	if err != nil {
		p.b.Fatal(err)
	}
	if p.futures = append(p.futures, f); len(p.futures) >= 1000 {
		p.wait()
	}
}

// wait waits for every publish's acknowledgement.
func (p *asyncPub) wait() {
	waitAcks(p.b, p.futures)
	p.futures = p.futures[:0]
}

func waitAcks(b *testing.B, fs []jetstream.PubAckFuture) {
	b.Helper()
	for _, f := range fs {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			b.Fatal(err)
		case <-time.After(time.Minute):
			b.Fatal("publish ack timed out")
		}
	}
}

// benchMessage is one message's events: 70 % delivered at once, 15 %
// deferred then delivered, 8 % deferred twice then failed with a DSN, 5 %
// failed at once with a DSN, 2 % with two recipients.
func benchMessage(rng *rand.Rand, id string, at time.Time) []*events.Event {
	rcpt := func() string {
		d := rng.IntN(200)
		if rng.IntN(10) < 3 {
			d = 1 // the big mailbox provider
		}
		return fmt.Sprintf("user%d@d%d.test", rng.IntN(5000), d)
	}
	acc := accepted(id, at, fmt.Sprintf("app%d@sender%d.test", rng.IntN(20), rng.IntN(10)), 1)
	acc.User = fmt.Sprintf("user%d", rng.IntN(10))
	acc.Meta = map[string]string{"campaign": fmt.Sprintf("c%d", rng.IntN(100)), "customer": fmt.Sprint(rng.IntN(10000))}
	r, t := rcpt(), func(m int) time.Time { return at.Add(time.Duration(m) * time.Minute) }
	out := []*events.Event{acc}
	dsn := &events.Event{Time: t(90), Event: events.DSN, QueueID: id, DSNID: "DSN" + id[3:],
		Rcpt: *acc.MailFrom, Status: "queued", Reason: "failed"}
	switch p := rng.IntN(100); {
	case p < 70:
		out = append(out, delivery(id, r, events.StatusDelivered, t(0), 1))
	case p < 85:
		out = append(out, delivery(id, r, events.StatusDeferred, t(0), 1), delivery(id, r, events.StatusDelivered, t(5), 2))
	case p < 93:
		out = append(out, delivery(id, r, events.StatusDeferred, t(0), 1), delivery(id, r, events.StatusDeferred, t(5), 2),
			delivery(id, r, events.StatusFailed, t(90), 3), dsn)
	case p < 98:
		out = append(out, delivery(id, r, events.StatusFailed, t(0), 1), dsn)
	default:
		acc.RcptCount = 2
		out = append(out, delivery(id, r, events.StatusDelivered, t(0), 1), delivery(id, rcpt(), events.StatusDeferred, t(0), 1))
	}
	for _, e := range out[1:] {
		e.Meta, e.User = acc.Meta, acc.User
	}
	return out
}

// waitIndexed waits until the indexer has acknowledged every event.
func waitIndexed(b *testing.B, v *env) { b.Helper(); waitAcked(b, v, benchEvents) }

// pageCursor returns the cursor after n pages of q.
func pageCursor(b *testing.B, v *env, q Query, n int) string {
	b.Helper()
	for range n {
		p, err := v.x.Search(context.Background(), q)
		if err != nil || p.Next == "" {
			b.Fatalf("page of %+v: %v (next %q)", q, err, p.Next)
		}
		q.Cursor = p.Next
	}
	return q.Cursor
}

// BenchmarkIndexRelayLoad times the indexer catching up with what a relay
// under load emits: per message an accepted event and, a moment later, a
// delivered one (the relay's own fields: connection, TLS, DKIM, MX), in
// the order the events stream gets them (deliveries trail acceptances).
// cpu-µs/event is the whole process (indexer and nats-server), the cost
// the relay pays beside its mail path.
func BenchmarkIndexRelayLoad(b *testing.B) {
	const messages = 5000
	v := newEnv(b, Options{})
	rng := rand.New(rand.NewPCG(9, 10))
	indexed := 0
	var cpu time.Duration
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		now := time.Now().UTC()
		var evs []*events.Event
		var pending []*events.Event
		for i := range messages {
			at := now.Add(time.Duration(i) * time.Millisecond)
			id := idAt(at, rng)
			rcpt := fmt.Sprintf("user%d@example.test", i)
			acc := accepted(id, at, "app@sender.test", 1)
			acc.ConnID, acc.RemoteAddr, acc.TLS, acc.DKIM, acc.Rcpts = "C"+id[10:], "127.0.0.1:40000", "TLS1.3", "signed", []string{rcpt}
			d := delivery(id, rcpt, events.StatusDelivered, at.Add(40*time.Millisecond), 1)
			d.IP, d.Port, d.TLS, d.TLSPolicy, d.TLSCipher, d.DurationMS, d.Arrival, d.Domain =
				"127.0.0.1", 25, "TLS1.3", "opportunistic", "TLS_AES_128_GCM_SHA256", 12, at, "example.test"
			d.Reply = "250 2.0.0 Ok: queued as " + id
			evs = append(evs, acc)
			if pending = append(pending, d); len(pending) > 40 { // deliveries trail by ~40 messages
				evs, pending = append(evs, pending[0]), pending[1:]
			}
		}
		evs = append(evs, pending...)
		p := &asyncPub{b: b, js: v.js, marshal: func(e any) ([]byte, error) { return events.Marshal(e.(*events.Event)) }}
		for _, e := range evs {
			p.publish(e)
		}
		p.wait()
		indexed += len(evs)
		c0 := processCPU()
		b.StartTimer()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = v.x.Run(ctx) }()
		waitAcked(b, v, uint64(indexed))
		cancel()
		<-done
		b.StopTimer()
		cpu += processCPU() - c0
		b.StartTimer()
	}
	b.ReportMetric(float64(cpu.Microseconds())/float64(indexed), "cpu-µs/event")
}

// waitAcked waits until the indexer has acknowledged the first n events.
func waitAcked(b *testing.B, v *env, n uint64) {
	b.Helper()
	queuetest.Eventually(b, 10*time.Minute, "events indexed", func() bool {
		c, err := v.js.Consumer(context.Background(), events.StreamName, Durable)
		if err != nil {
			return false
		}
		info, err := c.Info(context.Background())
		return err == nil && info.AckFloor.Stream >= n && info.NumAckPending == 0
	})
}

// processCPU is the process's user and system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
