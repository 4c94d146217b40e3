package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// sinkRun is a sink command running in the background.
type sinkRun struct {
	smtp, http string
	out, err   *syncBuffer
	rc         chan int
}

func startSinkCmd(t *testing.T, ctx context.Context, args ...string) *sinkRun {
	t.Helper()
	r := &sinkRun{out: &syncBuffer{}, err: &syncBuffer{}, rc: make(chan int, 1)}
	ready := make(chan struct{})
	go func() {
		r.rc <- sinkMain(ctx, args, stdio{strings.NewReader(""), r.out, r.err}, func(s, h string) {
			r.smtp, r.http = s, h
			close(ready)
		})
	}()
	select {
	case <-ready:
	case rc := <-r.rc:
		t.Fatalf("sink exited with %d: %s", rc, r.err.String())
	case <-time.After(30 * time.Second):
		t.Fatal("sink did not start")
	}
	return r
}

func (r *sinkRun) wait(t *testing.T) int {
	t.Helper()
	select {
	case rc := <-r.rc:
		return rc
	case <-time.After(30 * time.Second):
		t.Fatal("sink did not exit")
		return -1
	}
}

func TestRunSinkExpectWithTLS(t *testing.T) {
	t.Parallel()
	r := startSinkCmd(t, context.Background(), "--listen", "127.0.0.1:0", "--tls", "--expect", "30", "--quiet")
	var out, errb syncBuffer
	if rc := runBench([]string{"--server", r.smtp, "--tls", "starttls", "--insecure", "-n", "30", "-c", "3", "--json"},
		stdio{strings.NewReader(""), &out, &errb}); rc != 0 {
		t.Fatalf("bench rc %d: %s", rc, errb.String())
	}
	if rc := r.wait(t); rc != 0 {
		t.Fatalf("sink rc %d: %s", rc, r.err.String())
	}
	got := r.out.String()
	if !strings.HasPrefix(got, "expect_reached=30 nth_unix_ns=") || !strings.Contains(got, "messages=30") {
		t.Errorf("sink output %q", got)
	}
}

func TestRunSinkHTTPAndFailures(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := startSinkCmd(t, ctx, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--permfail", "10%", "--fail-at", "data")
	var out, errb syncBuffer
	if rc := runBench([]string{"--server", r.smtp, "--tls", "none", "-n", "50", "-c", "2", "--json"},
		stdio{strings.NewReader(""), &out, &errb}); rc != 0 {
		t.Fatalf("bench rc %d: %s", rc, errb.String())
	}
	resp, err := http.Get("http://" + r.http + "/wait?n=45&timeout=10s")
	if err != nil {
		t.Fatal(err)
	}
	var w struct {
		Messages   int64 `json:"messages"`
		PermFailed int64 `json:"permfailed"`
		NthUnixNs  int64 `json:"nth_unix_ns"`
		Reached    bool  `json:"reached"`
	}
	err = json.NewDecoder(resp.Body).Decode(&w)
	resp.Body.Close()
	if err != nil || !w.Reached || w.Messages != 45 || w.PermFailed != 5 || w.NthUnixNs == 0 {
		t.Errorf("wait reply %+v, %v", w, err)
	}
	cancel()
	if rc := r.wait(t); rc != 0 {
		t.Errorf("rc %d", rc)
	}
	if !strings.Contains(r.err.String(), "exiting: 45 msgs") {
		t.Errorf("stderr %q", r.err.String())
	}
}

func TestRunSinkRefuses(t *testing.T) {
	t.Parallel()
	cases := map[string]struct {
		args []string
		rc   int
	}{
		"all interfaces": {[]string{"--listen", ":2525"}, 1},
		"remote listen":  {[]string{"--listen", "192.0.2.1:2525"}, 1},
		"remote http":    {[]string{"--listen", "127.0.0.1:0", "--http", "192.0.2.1:2526"}, 2},
		"bad share":      {[]string{"--tempfail", "150%"}, 2},
		"cert alone":     {[]string{"--cert", "x.pem"}, 2},
	}
	for name, tc := range cases {
		var out, errb syncBuffer
		if rc := sinkMain(context.Background(), tc.args, stdio{strings.NewReader(""), &out, &errb}, nil); rc != tc.rc {
			t.Errorf("%s: rc %d, want %d (%s)", name, rc, tc.rc, errb.String())
		}
	}
}
