package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/relay/devtools/sink"
)

// startSink starts an in-process sink on a random loopback port.
func startSink(t *testing.T, opts sink.Options) *sink.Sink {
	t.Helper()
	opts.Addr = "127.0.0.1:0"
	s, err := sink.New(opts)
	if err != nil {
		t.Fatalf("sink.New: %v", err)
	}
	if err := s.Start(); err != nil {
		t.Fatalf("sink.Start: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func baseOptions(s *sink.Sink) Options {
	return Options{
		Server: s.Addr().String(), TLS: TLSNone, Messages: 100, Conns: 4, Size: 4096,
		From: "bench@example.test", Rcpt: "user{n}@example.test", Timeout: 10 * time.Second,
	}
}

func run(t *testing.T, opts Options) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := New(ctx, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	res, err := b.Run(ctx)
	if err != nil {
		t.Fatalf("Run: %v (%+v)", err, res)
	}
	return res
}

func TestStartTLSAuthCountsMatch(t *testing.T) {
	t.Parallel()
	tc, err := sink.SelfSignedTLS()
	if err != nil {
		t.Fatal(err)
	}
	s := startSink(t, sink.Options{TLS: tc, Auth: func(u, p string) bool { return u == "bench" && p == "secret" }})
	opts := baseOptions(s)
	opts.TLS, opts.Insecure, opts.User, opts.Password = TLSStartTLS, true, "bench", "secret"
	opts.Messages, opts.Conns = 500, 8
	res := run(t, opts)
	if res.Sent != 500 || res.Failed != 0 || res.Unsent != 0 || res.Connects != 8 {
		t.Fatalf("result %+v", res)
	}
	st := s.Stats()
	if st.Messages != 500 || st.Rcpts != 500 || st.Bytes != 500*4096 || st.Connections != 8 {
		t.Errorf("sink stats %+v", st)
	}
	if res.Bytes != st.Bytes || res.P50Ms <= 0 || res.P50Ms > res.P90Ms || res.P90Ms > res.P99Ms || res.P99Ms > res.MaxMs {
		t.Errorf("bytes/latency %+v", res)
	}
	if res.StartUnixNs == 0 || res.EndUnixNs <= res.StartUnixNs || res.MsgsPerS <= 0 || res.MBPerS <= 0 {
		t.Errorf("times/rates %+v", res)
	}
}

func TestBadPasswordFailsFast(t *testing.T) {
	t.Parallel()
	s := startSink(t, sink.Options{Auth: func(u, p string) bool { return false }})
	opts := baseOptions(s)
	opts.User, opts.Password, opts.Conns = "bench", "nope", 2
	ctx := context.Background()
	b, err := New(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	res, err := b.Run(ctx)
	if err == nil || res.Sent != 0 || res.FailedByCode["535"] != 2*maxConnectErrors {
		t.Errorf("Run = %+v, %v; want 535 failures and an error", res, err)
	}
	if !strings.Contains(res.FirstError, "535") {
		t.Errorf("first error %q", res.FirstError)
	}
}

func TestImplicitTLS(t *testing.T) {
	t.Parallel()
	tc, err := sink.SelfSignedTLS()
	if err != nil {
		t.Fatal(err)
	}
	s := startSink(t, sink.Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// A TLS terminator in front of the plain sink: implicit TLS (RFC 8314).
	go proxyTLS(ln, tc, s.Addr().String())
	t.Cleanup(func() { ln.Close() })
	opts := baseOptions(s)
	opts.Server, opts.TLS, opts.Insecure, opts.Messages = ln.Addr().String(), TLSImplicit, true, 20
	if res := run(t, opts); res.Sent != 20 || s.Stats().Messages != 20 {
		t.Errorf("result %+v, sink %+v", res, s.Stats())
	}
}

func TestFailuresByCode(t *testing.T) {
	t.Parallel()
	for _, at := range []sink.FailAt{sink.FailAtRcpt, sink.FailAtData} {
		t.Run(string(at), func(t *testing.T) {
			t.Parallel()
			s := startSink(t, sink.Options{TempFail: 500, PermFail: 100, FailAt: at})
			opts := baseOptions(s)
			opts.Messages, opts.Conns, opts.Size = 1000, 8, 1024
			res := run(t, opts)
			wantT, wantP := sink.ExpectedFailures(1000, 500, 100)
			if res.FailedByCode["451"] != wantT || res.FailedByCode["550"] != wantP || len(res.FailedByCode) != 2 {
				t.Errorf("failed by code %v, want 451:%d 550:%d", res.FailedByCode, wantT, wantP)
			}
			if res.Sent != 1000-wantT-wantP || res.Failed != wantT+wantP || res.Connects != 8 {
				t.Errorf("result %+v", res)
			}
			if st := s.Stats(); st.Messages != res.Sent {
				t.Errorf("sink got %d, loadgen sent %d", st.Messages, res.Sent)
			}
		})
	}
}

func TestDurationBound(t *testing.T) {
	t.Parallel()
	s := startSink(t, sink.Options{})
	opts := baseOptions(s)
	opts.Messages, opts.Duration, opts.Size = 1<<30, 300*time.Millisecond, 512
	start := time.Now()
	res := run(t, opts)
	if took := time.Since(start); took > 300*time.Millisecond+maxGrace {
		t.Errorf("run took %v", took)
	}
	if !res.StoppedByDuration || res.Sent == 0 || res.Unsent == 0 || res.ElapsedS > 0.3+maxGrace.Seconds() {
		t.Errorf("result %+v", res)
	}
}

func TestJSONFields(t *testing.T) {
	t.Parallel()
	s := startSink(t, sink.Options{})
	res := run(t, baseOptions(s))
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"sent", "failed", "failed_by_code", "unsent", "msgs_per_s", "mb_per_s",
		"p50_ms", "p90_ms", "p99_ms", "max_ms", "start_unix_ns", "end_unix_ns", "elapsed_s", "n", "c", "size"} {
		if _, ok := m[k]; !ok {
			t.Errorf("JSON lacks %q: %s", k, b)
		}
	}
	if !bytes.Contains(b, []byte(`"sent":100`)) {
		t.Errorf("JSON %s", b)
	}
}

func TestRefusesRemoteAndBadOptions(t *testing.T) {
	t.Parallel()
	ok := Options{Server: "127.0.0.1:2525", TLS: TLSNone, Messages: 1, Conns: 1, Size: 4096, From: "a@x.test", Rcpt: "b@x.test"}
	cases := map[string]func(o *Options){
		"remote ip":   func(o *Options) { o.Server = "192.0.2.1:25" },
		"remote ipv6": func(o *Options) { o.Server = "[2001:db8::1]:25" },
		"no port":     func(o *Options) { o.Server = "127.0.0.1" },
		"tls":         func(o *Options) { o.TLS = "ssl" },
		"small":       func(o *Options) { o.Size = 100 },
		"no conns":    func(o *Options) { o.Conns = 0 },
		"duration":    func(o *Options) { o.Duration = 48 * time.Hour },
	}
	for name, mod := range cases {
		o := ok
		mod(&o)
		if _, err := New(context.Background(), o); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
	if _, err := New(context.Background(), ok); err != nil {
		t.Errorf("loopback: %v", err)
	}
	o := ok
	o.Server, o.AllowRemote = "192.0.2.1:25", true
	if _, err := New(context.Background(), o); err != nil {
		t.Errorf("allow remote: %v", err)
	}
}

// BenchmarkRunAgainstSink measures whole transactions (client and sink in
// this process), 4 KiB over 8 connections; see msgs/s.
func BenchmarkRunAgainstSink(b *testing.B) {
	s, err := sink.New(sink.Options{Addr: "127.0.0.1:0"})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Start(); err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	opts := baseOptions(s)
	opts.Conns = 8
	opts.Messages = max(b.N, 8)
	b.ReportAllocs()
	b.ResetTimer()
	bench, err := New(context.Background(), opts)
	if err != nil {
		b.Fatal(err)
	}
	res, err := bench.Run(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(res.MsgsPerS, "msgs/s")
	b.ReportMetric(res.P99Ms, "p99_ms")
}
