package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"github.com/jetrelay/jetrelay/relay/devtools/sink"
)

// syncBuffer is a bytes.Buffer safe for a writer goroutine and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// benchSink starts an in-process sink on a random loopback port.
func benchSink(t *testing.T, opts sink.Options) *sink.Sink {
	t.Helper()
	opts.Addr = "127.0.0.1:0"
	s, err := sink.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestRunBenchJSONWithStartTLSAndAuth(t *testing.T) {
	t.Parallel()
	tc, err := sink.SelfSignedTLS()
	if err != nil {
		t.Fatal(err)
	}
	s := benchSink(t, sink.Options{TLS: tc, Auth: func(u, p string) bool { return u == "bench" && p == "pw" }})
	var out, errb syncBuffer
	rc := runBench([]string{"--server", s.Addr().String(), "--tls", "starttls", "--insecure",
		"--user", "bench", "-n", "200", "-c", "4", "--size", "1KiB", "--json"},
		stdio{strings.NewReader("pw\n"), &out, &errb})
	if rc != 0 {
		t.Fatalf("rc %d, stderr %s", rc, errb.String())
	}
	var res map[string]any
	if err := json.Unmarshal([]byte(out.String()), &res); err != nil {
		t.Fatalf("output %q: %v", out.String(), err)
	}
	if res["sent"] != 200.0 || res["failed"] != 0.0 || res["size"] != 1024.0 || res["start_unix_ns"] == 0.0 {
		t.Errorf("result %v", res)
	}
	if _, ok := res["end_unix_ns"]; !ok {
		t.Errorf("no end_unix_ns in %v", res)
	}
	if st := s.Stats(); st.Messages != 200 || st.Bytes != 200*1024 {
		t.Errorf("sink %+v", st)
	}
}

func TestRunBenchSummaryCountsCodes(t *testing.T) {
	t.Parallel()
	s := benchSink(t, sink.Options{TempFail: 1000, PermFail: 500})
	var out, errb syncBuffer
	rc := runBench([]string{"--server", s.Addr().String(), "--tls", "none", "-n", "100", "-c", "2", "--size", "512"},
		stdio{strings.NewReader(""), &out, &errb})
	if rc != 0 {
		t.Fatalf("rc %d, stderr %s", rc, errb.String())
	}
	for _, want := range []string{"sent      85 ", "failed    15 (451: 10, 550: 5)", "p99"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
}

func TestRunBenchRefuses(t *testing.T) {
	t.Parallel()
	cases := map[string][]string{
		"remote server":   {"--server", "192.0.2.1:587", "--tls", "none"},
		"bad size":        {"--size", "lots"},
		"bad tls":         {"--tls", "ssl"},
		"no password env": {"--user", "u", "--password-env", "JETRELAY_TEST_SURELY_UNSET"},
		"extra argument":  {"now"},
	}
	for name, args := range cases {
		var out, errb syncBuffer
		if rc := runBench(args, stdio{strings.NewReader(""), &out, &errb}); rc != 2 {
			t.Errorf("%s: rc %d, want 2 (stderr %s)", name, rc, errb.String())
		}
	}
	var out, errb syncBuffer
	runBench([]string{"--server", "192.0.2.1:587"}, stdio{strings.NewReader(""), &out, &errb})
	if !strings.Contains(errb.String(), "non-loopback") {
		t.Errorf("stderr %q", errb.String())
	}
}
