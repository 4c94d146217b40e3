package proxyproto

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

const testTimeout = 60 * time.Second

// shortTimeout is the header limit of tests that wait for it to pass.
const shortTimeout = 50 * time.Millisecond

// refusals records Refused calls.
type refusals struct {
	mu      sync.Mutex
	reasons []error
	seen    chan struct{}
}

func (r *refusals) add(_ net.Addr, reason error) {
	r.mu.Lock()
	r.reasons = append(r.reasons, reason)
	r.mu.Unlock()
	r.seen <- struct{}{}
}

func (r *refusals) next(t *testing.T) error {
	t.Helper()
	select {
	case <-r.seen:
	case <-time.After(testTimeout):
		t.Fatal("no refusal reported")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reasons[len(r.reasons)-1]
}

func listen(t *testing.T, o Options) (*Listener, *refusals) {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rs := &refusals{seen: make(chan struct{}, 16)}
	o.Refused = rs.add
	l := NewListener(inner, o)
	t.Cleanup(func() { _ = l.Close() })
	return l, rs
}

func allowLoopback(a netip.Addr) bool { return a.IsLoopback() }

// notFrom127001 allows the loopback net except 127.0.0.1.
func notFrom127001(a netip.Addr) bool { return a.IsLoopback() && a != netip.MustParseAddr("127.0.0.1") }

func dial(t *testing.T, l net.Listener, send string) net.Conn {
	t.Helper()
	return dialFrom(t, l, "127.0.0.1", send)
}

func dialFrom(t *testing.T, l net.Listener, source, send string) net.Conn {
	t.Helper()
	d := &net.Dialer{Timeout: testTimeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}}
	c, err := d.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if send != "" {
		if _, err := io.WriteString(c, send); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// acceptOne runs Accept in the background.
func acceptOne(l net.Listener) chan net.Conn {
	out := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			close(out)
			return
		}
		out <- c
	}()
	return out
}

// closedWithoutData checks that the server side closed c having sent nothing.
func closedWithoutData(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(testTimeout))
	b, err := io.ReadAll(c)
	if len(b) > 0 || (err != nil && !errors.Is(err, net.ErrClosed) && !isReset(err)) {
		t.Fatalf("read %q, %v; want a close without data", b, err)
	}
}

func isReset(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && !oe.Timeout()
}

func TestListenerHeaderThenData(t *testing.T) {
	t.Parallel()
	l, _ := listen(t, Options{Allowed: allowLoopback})
	got := acceptOne(l)
	c := dial(t, l, "PROXY TCP4 192.0.2.10 198.51.100.1 40000 587\r\nEHLO client.test\r\n")
	sc := <-got
	if sc.RemoteAddr().String() != "192.0.2.10:40000" || sc.LocalAddr().String() != "198.51.100.1:587" {
		t.Fatalf("addresses %v -> %v", sc.RemoteAddr(), sc.LocalAddr())
	}
	if p := sc.(*Conn).Peer().String(); p != c.LocalAddr().String() {
		t.Fatalf("Peer() = %s, want the balancer %s", p, c.LocalAddr())
	}
	buf := make([]byte, len("EHLO client.test\r\n"))
	_ = sc.SetReadDeadline(time.Now().Add(testTimeout))
	if _, err := io.ReadFull(sc, buf); err != nil || string(buf) != "EHLO client.test\r\n" {
		t.Fatalf("bytes after the header: %q, %v", buf, err)
	}
}

func TestListenerLocalKeepsOwnAddress(t *testing.T) {
	t.Parallel()
	l, _ := listen(t, Options{Allowed: allowLoopback})
	got := acceptOne(l)
	c := dial(t, l, string(AppendV2(nil, Header{Command: Local}, nil)))
	sc := <-got
	if sc.RemoteAddr().String() != c.LocalAddr().String() || sc.(*Conn).Header().Command != Local {
		t.Fatalf("LOCAL: remote %v, header %+v; want %v", sc.RemoteAddr(), sc.(*Conn).Header(), c.LocalAddr())
	}
}

func TestListenerRefusals(t *testing.T) {
	t.Parallel()
	plain, quick := Options{Allowed: allowLoopback}, Options{Allowed: allowLoopback, Timeout: shortTimeout}
	cases := []struct {
		name    string
		opts    Options
		send    string
		hangUp  bool
		wantErr error
	}{
		{"peer not allowed", Options{Allowed: notFrom127001}, "PROXY UNKNOWN\r\n", false, ErrNotAllowed},
		{"no header in time", quick, "", false, ErrTimeout},
		{"partial header in time", quick, "PROXY TCP4 1", false, ErrTimeout},
		{"malformed header", plain, "PROXY TCP4 1.2.3.4 5.6.7.8 1 09\r\n", false, ErrInvalid},
		{"SMTP instead", plain, "EHLO client.test\r\n", false, ErrInvalid},
		{"closed early", plain, "PROXY TCP4", true, ErrClosed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l, rs := listen(t, tc.opts)
			got := acceptOne(l)
			c := dial(t, l, tc.send)
			if tc.hangUp {
				_ = c.(*net.TCPConn).CloseWrite()
			}
			if err := rs.next(t); !errors.Is(err, tc.wantErr) {
				t.Fatalf("refused with %v, want %v", err, tc.wantErr)
			}
			if !tc.hangUp {
				closedWithoutData(t, c)
			}
			// The listener goes on: a good header is accepted.
			dialFrom(t, l, "127.0.0.2", "PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n")
			if sc := <-got; sc == nil || sc.RemoteAddr().String() != "[2001:db8::1]:1" {
				t.Fatalf("next connection: %v", sc)
			}
		})
	}
}

// TestListenerMaxPending: over MaxPending connections waiting for their
// header, the next is closed at once; a slow peer holds up nobody else.
func TestListenerMaxPending(t *testing.T) {
	t.Parallel()
	l, rs := listen(t, Options{Allowed: allowLoopback, MaxPending: 1})
	got := acceptOne(l)
	slow := dial(t, l, "PROXY ")
	extra := dial(t, l, "PROXY UNKNOWN\r\n")
	if err := rs.next(t); !errors.Is(err, ErrTooMany) {
		t.Fatalf("refused with %v, want ErrTooMany", err)
	}
	closedWithoutData(t, extra)
	if _, err := io.WriteString(slow, "UNKNOWN\r\n"); err != nil {
		t.Fatal(err)
	}
	if sc := <-got; sc == nil {
		t.Fatal("slow peer's connection not accepted")
	}
}

// TestListenerClose: Close ends pending header reads and Accept.
func TestListenerClose(t *testing.T) {
	t.Parallel()
	l, _ := listen(t, Options{Allowed: allowLoopback})
	got := acceptOne(l)
	c := dial(t, l, "PROXY ")
	done := make(chan error, 1)
	go func() { done <- l.Close() }()
	if sc, ok := <-got; ok {
		t.Fatalf("Accept after Close returned %v", sc.RemoteAddr())
	}
	closedWithoutData(t, c)
	if err := <-done; err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// TestListenerCloseBeforeAccept: an Accept after Close reports the closed
// listener at once (the accept loop never starts, so Close had nothing to
// wait for).
func TestListenerCloseBeforeAccept(t *testing.T) {
	t.Parallel()
	l, _ := listen(t, Options{Allowed: allowLoopback})
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	done := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if c != nil {
			_ = c.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("Accept after Close did not return")
	}
}
