package sink

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// startSink starts a sink on a random loopback port and closes it at the end.
func startSink(t *testing.T, opts Options) *Sink {
	t.Helper()
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	s, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := s.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// dial opens a client (with STARTTLS when useTLS) and says EHLO.
func dial(t testing.TB, s *Sink, useTLS bool) *smtp.Client {
	t.Helper()
	var c *smtp.Client
	var err error
	if useTLS {
		c, err = smtp.DialStartTLS(s.Addr().String(), &tls.Config{InsecureSkipVerify: true})
	} else {
		c, err = smtp.Dial(s.Addr().String())
	}
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Hello("test.example"); err != nil {
		t.Fatalf("EHLO: %v", err)
	}
	return c
}

func sendMsg(c *smtp.Client, rcpts []string, body string) error {
	if err := c.Mail("a@example.test", nil); err != nil {
		return err
	}
	for _, r := range rcpts {
		if err := c.Rcpt(r, nil); err != nil {
			return err
		}
	}
	wc, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := wc.Write([]byte(body)); err != nil {
		return err
	}
	return wc.Close()
}

func TestSinkCountsAndWaits(t *testing.T) {
	t.Parallel()
	s := startSink(t, Options{})
	c := dial(t, s, false)
	for _, ext := range []string{"PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "SIZE", "DSN"} {
		if ok, _ := c.Extension(ext); !ok {
			t.Errorf("extension %s not advertised", ext)
		}
	}
	body := "Subject: x\r\n\r\nhello\r\n"
	for i := 0; i < 3; i++ {
		if err := sendMsg(c, []string{"a@x.test", "b@x.test"}, body); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	at, err := s.WaitFor(ctx, 3)
	if err != nil {
		t.Fatalf("WaitFor: %v", err)
	}
	st := s.Stats()
	want := Stats{Messages: 3, Rcpts: 6, Bytes: int64(3 * len(body)), Connections: 1,
		FirstUnixNs: st.FirstUnixNs, LastUnixNs: st.LastUnixNs}
	if st != want {
		t.Errorf("Stats = %+v, want %+v", st, want)
	}
	if at.UnixNano() != st.LastUnixNs || st.FirstUnixNs == 0 || st.FirstUnixNs > st.LastUnixNs {
		t.Errorf("arrival %d, first %d, last %d", at.UnixNano(), st.FirstUnixNs, st.LastUnixNs)
	}
	s.Reset()
	if got := s.Stats(); got != (Stats{}) {
		t.Errorf("after Reset: %+v", got)
	}
}

func TestWaitForBlocksUntilArrival(t *testing.T) {
	t.Parallel()
	s := startSink(t, Options{})
	got := make(chan error, 1)
	go func() {
		_, err := s.WaitFor(context.Background(), 1)
		got <- err
	}()
	c := dial(t, s, false)
	if err := sendMsg(c, []string{"a@x.test"}, "\r\nx\r\n"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("WaitFor: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WaitFor did not return after the message arrived")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.WaitFor(ctx, 2); !errors.Is(err, context.Canceled) {
		t.Errorf("WaitFor with cancelled ctx: %v", err)
	}
}

func TestSinkFailures(t *testing.T) {
	t.Parallel()
	for _, at := range []FailAt{FailAtRcpt, FailAtData} {
		t.Run(string(at), func(t *testing.T) {
			t.Parallel()
			s := startSink(t, Options{TempFail: 500, PermFail: 100, FailAt: at})
			c := dial(t, s, false)
			const n = 1000
			var temp, perm int64
			for i := 0; i < n; i++ {
				err := sendMsg(c, []string{"a@x.test"}, "\r\nx\r\n")
				var se *smtp.SMTPError
				switch {
				case err == nil:
				case errors.As(err, &se) && se.Code == 451 && se.EnhancedCode == (smtp.EnhancedCode{4, 7, 1}):
					temp++
				case errors.As(err, &se) && se.Code == 550 && se.EnhancedCode == (smtp.EnhancedCode{5, 1, 1}):
					perm++
				default:
					t.Fatalf("message %d: %v", i, err)
				}
				if err != nil {
					if err := c.Reset(); err != nil {
						t.Fatal(err)
					}
				}
			}
			wantT, wantP := ExpectedFailures(n, 500, 100)
			if temp != wantT || perm != wantP || wantT != 50 || wantP != 10 {
				t.Errorf("temp %d perm %d, want %d %d (50, 10)", temp, perm, wantT, wantP)
			}
			st := s.Stats()
			if st.Messages != n-wantT-wantP || st.TempFailed != wantT || st.PermFailed != wantP {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

func TestSinkAuthAndTLS(t *testing.T) {
	t.Parallel()
	tc, err := SelfSignedTLS()
	if err != nil {
		t.Fatal(err)
	}
	s := startSink(t, Options{TLS: tc, Auth: func(u, p string) bool { return u == "bench" && p == "pw" }})
	c := dial(t, s, true)
	if _, ok := c.TLSConnectionState(); !ok {
		t.Fatal("no TLS after STARTTLS")
	}
	var se *smtp.SMTPError
	if err := c.Mail("a@x.test", nil); !errors.As(err, &se) || se.EnhancedCode != (smtp.EnhancedCode{5, 7, 0}) {
		t.Errorf("MAIL before AUTH: %v, want 5.7.0", err)
	}
	if err := c.Auth(sasl.NewPlainClient("", "bench", "wrong")); !errors.As(err, &se) || se.Code != 535 {
		t.Errorf("bad AUTH: %v, want 535", err)
	}
	if err := c.Auth(sasl.NewPlainClient("", "bench", "pw")); err != nil {
		t.Fatalf("AUTH: %v", err)
	}
	if err := sendMsg(c, []string{"a@x.test"}, "\r\nx\r\n"); err != nil {
		t.Fatalf("send after AUTH: %v", err)
	}
}

func TestSinkDump(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := startSink(t, Options{DumpDir: dir})
	c := dial(t, s, false)
	body := "Subject: dumped\r\n\r\nbody\r\n"
	if err := sendMsg(c, []string{"a@x.test"}, body); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "00000001.eml"))
	if err != nil || string(got) != body {
		t.Errorf("dump = %q, %v; want %q", got, err, body)
	}
}

func TestNewRefuses(t *testing.T) {
	t.Parallel()
	cases := map[string]Options{
		"all interfaces": {Addr: ":2525"},
		"remote ip":      {Addr: "192.0.2.1:2525"},
		"no port":        {Addr: "127.0.0.1"},
		"bad fail-at":    {Addr: "127.0.0.1:0", FailAt: "mail"},
		"shares > 100%":  {Addr: "127.0.0.1:0", TempFail: 6000, PermFail: 5000},
	}
	for name, o := range cases {
		if _, err := New(o); err == nil {
			t.Errorf("%s: New(%+v) succeeded", name, o)
		}
	}
	if _, err := New(Options{Addr: "192.0.2.1:2525", AllowRemote: true}); err != nil {
		t.Errorf("AllowRemote: %v", err)
	}
}

func TestParseShare(t *testing.T) {
	t.Parallel()
	good := map[string]int{"5%": 500, "0.25%": 25, "100%": 10000, "1": 100, " 0% ": 0, ".5%": 50, "12.5": 1250}
	for in, want := range good {
		if got, err := ParseShare(in); err != nil || got != want {
			t.Errorf("ParseShare(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "%", "101%", "-1%", "0.125%", "5.-%", "abc", "1e2"} {
		if got, err := ParseShare(in); err == nil {
			t.Errorf("ParseShare(%q) = %d, want an error", in, got)
		}
	}
}

func TestFailPlanExactPrefix(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ temp, perm, n int }{{500, 100, 500}, {10000, 0, 7}, {0, 10000, 9}, {333, 667, 1234}, {0, 0, 50}} {
		p, err := newFailPlan(tc.temp, tc.perm, 0)
		if err != nil {
			t.Fatal(err)
		}
		var temp, perm int64
		for i := 0; i < tc.n; i++ {
			switch p.next() {
			case verdictTemp:
				temp++
			case verdictPerm:
				perm++
			}
		}
		wt, wp := ExpectedFailures(int64(tc.n), tc.temp, tc.perm)
		if temp != wt || perm != wp {
			t.Errorf("%+v: got %d/%d, want %d/%d", tc, temp, perm, wt, wp)
		}
	}
}

// TestRawPipelinedSession sends a whole pipelined session in one write
// (RFC 2920), with dot-stuffing and a bare-LF "." line that must not end DATA.
func TestRawPipelinedSession(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := startSink(t, Options{DumpDir: dir, MaxMessageBytes: 100})
	nc, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	script := "EHLO c.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n" +
		"..hidden\r\n.\nstill body\r\n.\r\n" +
		"MAIL FROM:<a@x.test> SIZE=101\r\nRCPT TO:<b@x.test>\r\nRSET\r\n" +
		strings.Repeat("x", 5000) + "\r\nQUIT\r\n"
	if _, err := nc.Write([]byte(script)); err != nil {
		t.Fatal(err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(nc)
	if err != nil {
		t.Fatal(err)
	}
	var codes []string
	for _, l := range strings.Split(strings.TrimSpace(string(got)), "\r\n") {
		if len(l) >= 4 && l[3] == ' ' {
			codes = append(codes, l[:3])
		}
	}
	want := "220 250 250 250 354 250 552 503 250 500 221"
	if strings.Join(codes, " ") != want {
		t.Errorf("reply codes %v, want %s\n%s", codes, want, got)
	}
	body, err := os.ReadFile(filepath.Join(dir, "00000001.eml"))
	if string(body) != ".hidden\r\n\nstill body\r\n" || err != nil {
		t.Errorf("body %q, %v", body, err)
	}
	if st := s.Stats(); st.Messages != 1 || st.Bytes != int64(len(body)) {
		t.Errorf("stats %+v", st)
	}
}
