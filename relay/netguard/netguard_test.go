package netguard

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestCheckDefaults(t *testing.T) {
	g := New(DefaultDenied(), nil)
	for _, tc := range []struct {
		addr   string
		denied bool
	}{
		{"127.0.0.1", true},
		{"127.255.255.254", true},
		{"10.1.2.3", true},
		{"172.16.0.1", true},
		{"172.31.255.255", true},
		{"172.32.0.1", false},
		{"192.168.1.1", true},
		{"100.64.0.1", true},
		{"100.127.255.255", true},
		{"100.128.0.1", false},
		{"169.254.169.254", true},
		{"224.0.0.1", true},
		{"239.255.255.250", true},
		{"240.0.0.1", true},
		{"255.255.255.255", true},
		{"0.0.0.0", true},
		{"0.1.2.3", true},
		{"8.8.8.8", false},
		{"192.0.2.1", false},
		{"::1", true},
		{"::", true},
		{"fe80::1", true},
		{"fe80::1%eth0", true},
		{"fe80::1%1", true},
		{"fd00::1", true},
		{"fc00::1", true},
		{"ff02::1", true},
		{"ff05::2", true},
		{"::ffff:127.0.0.1", true},
		{"::ffff:10.0.0.1", true},
		{"::ffff:169.254.169.254", true},
		{"::ffff:8.8.8.8", false},
		{"64:ff9b::7f00:1", true},
		{"64:ff9b::808:808", true},
		{"64:ff9b:1::1", true},
		{"2002:7f00:1::1", true},
		{"2002:c000:201::1", true},
		{"2001:4860:4860::8888", false},
		{"2a00:1450:4001::1b", false},
	} {
		t.Run(tc.addr, func(t *testing.T) {
			err := g.Check(netip.MustParseAddr(tc.addr))
			if (err != nil) != tc.denied {
				t.Fatalf("Check(%s) = %v, want denied=%v", tc.addr, err, tc.denied)
			}
			var de *DeniedError
			if tc.denied && !errors.As(err, &de) {
				t.Fatalf("Check(%s) error %T is not a *DeniedError", tc.addr, err)
			}
		})
	}
}

func TestCheckInvalidAddress(t *testing.T) {
	err := New(nil, nil).Check(netip.Addr{})
	var de *DeniedError
	if !errors.As(err, &de) || de.Detail() != "invalid address" {
		t.Fatalf("zero address: %v", err)
	}
}

func TestNilGuardPermits(t *testing.T) {
	var g *Guard
	if err := g.Check(netip.MustParseAddr("127.0.0.1")); err != nil {
		t.Fatalf("nil guard: %v", err)
	}
	if err := g.Control("tcp", "127.0.0.1:25", nil); err != nil {
		t.Fatalf("nil guard Control: %v", err)
	}
}

func TestAllowedPunchesHoles(t *testing.T) {
	g, err := Parse([]string{"10.0.0.0/8", "127.0.0.0/8", "::1"},
		[]string{"10.1.0.0/16", "127.0.0.1", "::ffff:127.0.0.2/128"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		addr   string
		denied bool
	}{
		{"10.1.2.3", false},
		{"10.2.0.1", true},
		{"127.0.0.1", false},
		{"::ffff:127.0.0.1", false},
		{"127.0.0.2", false}, // allowed in its mapped form
		{"127.0.0.3", true},
		{"::1", true},
		{"192.168.0.1", false}, // not in this denied list
	} {
		if err := g.Check(netip.MustParseAddr(tc.addr)); (err != nil) != tc.denied {
			t.Errorf("Check(%s) = %v, want denied=%v", tc.addr, err, tc.denied)
		}
	}
}

func TestAllowedWinsOverLongerDenied(t *testing.T) {
	g, err := Parse([]string{"10.1.2.0/24"}, []string{"10.0.0.0/8"})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Check(netip.MustParseAddr("10.1.2.3")); err != nil {
		t.Fatalf("allowed should win: %v", err)
	}
}

func TestDeniedErrorHidesAddress(t *testing.T) {
	err := New(DefaultDenied(), nil).Check(netip.MustParseAddr("::ffff:10.9.8.7"))
	var de *DeniedError
	if !errors.As(err, &de) {
		t.Fatalf("got %v", err)
	}
	if strings.Contains(err.Error(), "10.9.8.7") {
		t.Fatalf("Error() leaks the address: %q", err)
	}
	if de.Addr != netip.MustParseAddr("10.9.8.7") || de.Network != netip.MustParsePrefix("10.0.0.0/8") {
		t.Fatalf("DeniedError = %+v", de)
	}
	if d := de.Detail(); !strings.Contains(d, "10.9.8.7") || !strings.Contains(d, "10.0.0.0/8") {
		t.Fatalf("Detail() = %q", d)
	}
}

func TestParsePrefix(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{in: "10.0.0.0/8", want: "10.0.0.0/8"},
		{in: " 127.0.0.1 ", want: "127.0.0.1/32"},
		{in: "::1", want: "::1/128"},
		{in: "fc00::/7", want: "fc00::/7"},
		{in: "::ffff:10.0.0.0/104", want: "10.0.0.0/8"},
		{in: "::ffff:127.0.0.1", want: "127.0.0.1/32"},
		{in: "10.1.2.3/8", err: "did you mean 10.0.0.0/8"},
		{in: "fe80::1%eth0", err: "zone"},
		{in: "", err: "empty"},
		{in: "localhost", err: "neither an IP address"},
		{in: "10.0.0.0/33", err: "not a network prefix"},
		{in: "10.0.0/8", err: "not a network prefix"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			p, err := ParsePrefix(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ParsePrefix(%q) = %v, %v; want error containing %q", tc.in, p, err, tc.err)
				}
				return
			}
			if err != nil || p.String() != tc.want {
				t.Fatalf("ParsePrefix(%q) = %v, %v; want %s", tc.in, p, err, tc.want)
			}
		})
	}
}

func TestParseReportsEveryProblem(t *testing.T) {
	_, err := Parse([]string{"10.0.0.0/8", "bad", "1.2.3.4/8"}, []string{"also bad"})
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{`[1]: "bad"`, `[2]: "1.2.3.4/8"`, `[0]: "also bad"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
}

func TestDefaultDeniedIsFresh(t *testing.T) {
	a := DefaultDenied()
	a[0] = netip.MustParsePrefix("8.8.8.0/24")
	if DefaultDenied()[0] == a[0] {
		t.Fatal("DefaultDenied shares its backing array")
	}
	for _, d := range defaultDenied {
		if p, err := ParsePrefix(d.prefix); err != nil || p.String() != d.prefix {
			t.Errorf("default %q does not round-trip: %v %v", d.prefix, p, err)
		}
	}
}

func TestControlAddresses(t *testing.T) {
	g := New(DefaultDenied(), nil)
	for _, tc := range []struct {
		network, addr string
		denied        bool
	}{
		{"tcp", "127.0.0.1:25", true},
		{"tcp4", "8.8.8.8:25", false},
		{"tcp6", "[::1]:25", true},
		{"tcp6", "[fe80::1%eth0]:25", true},
		{"tcp6", "[::ffff:10.0.0.1]:25", true},
		{"tcp6", "[2001:4860:4860::8888]:25", false},
		{"udp", "169.254.169.254:53", true},
		{"ip4:icmp", "127.0.0.1", true},
		{"tcp", "not-an-ip:25", true},
		{"unix", "/run/x.sock", false},
	} {
		err := g.Control(tc.network, tc.addr, nil)
		if (err != nil) != tc.denied {
			t.Errorf("Control(%s, %s) = %v, want denied=%v", tc.network, tc.addr, err, tc.denied)
		}
	}
}

// listen returns a loopback listener that counts accepted connections.
func listen(t *testing.T) (string, <-chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted := make(chan struct{}, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
			accepted <- struct{}{}
		}
	}()
	return ln.Addr().String(), accepted
}

func TestDialerDeniedDoesNotConnect(t *testing.T) {
	addr, accepted := listen(t)
	d := New(DefaultDenied(), nil).Dialer(&net.Dialer{Timeout: 30 * time.Second})
	c, err := d.Dial("tcp", addr)
	if err == nil {
		c.Close()
		t.Fatal("dial to a denied loopback address succeeded")
	}
	var de *DeniedError
	if !errors.As(err, &de) {
		t.Fatalf("error %v is not a *DeniedError", err)
	}
	// A probe connection proves the listener works; had the denied dial
	// connected, its accept would be queued before the probe's.
	probe, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	probe.Close()
	<-accepted
	select {
	case <-accepted:
		t.Fatal("the denied dial reached the listener")
	default:
	}
}

func TestDialerAllowedConnects(t *testing.T) {
	addr, accepted := listen(t)
	g, err := Parse([]string{"127.0.0.0/8"}, []string{"127.0.0.0/8"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := g.Dialer(nil).DialContext(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatalf("allowed dial: %v", err)
	}
	c.Close()
	<-accepted
}

func TestDialerChainsExistingHooks(t *testing.T) {
	addr, _ := listen(t)
	g := New(DefaultDenied(), []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")})
	hookErr := errors.New("hook ran")

	base := &net.Dialer{Control: func(string, string, syscall.RawConn) error { return hookErr }}
	if _, err := g.Dialer(base).Dial("tcp", addr); !errors.Is(err, hookErr) {
		t.Fatalf("Control chain: %v", err)
	}
	if base.Control == nil || base.ControlContext != nil {
		t.Fatal("base dialer was modified")
	}

	ctxBase := &net.Dialer{ControlContext: func(context.Context, string, string, syscall.RawConn) error { return hookErr }}
	if _, err := g.Dialer(ctxBase).Dial("tcp", addr); !errors.Is(err, hookErr) {
		t.Fatalf("ControlContext chain: %v", err)
	}

	// The guard runs before the existing hook.
	denyAll := New(DefaultDenied(), nil)
	if _, err := denyAll.Dialer(ctxBase).Dial("tcp", addr); errors.Is(err, hookErr) || err == nil {
		t.Fatalf("guard did not run first: %v", err)
	}
}

func FuzzParseAndCheck(f *testing.F) {
	for _, s := range []string{"10.0.0.0/8", "::ffff:10.0.0.0/104", "fe80::1%eth0", "1.2.3.4/8", "::/0", ""} {
		f.Add(s, []byte{127, 0, 0, 1})
	}
	g := New(DefaultDenied(), nil)
	f.Fuzz(func(t *testing.T, s string, raw []byte) {
		if p, err := ParsePrefix(s); err == nil {
			again, err := ParsePrefix(p.String())
			if err != nil || again != p {
				t.Fatalf("%q -> %s does not round-trip: %v %v", s, p, again, err)
			}
		}
		ip, ok := netip.AddrFromSlice(raw)
		if !ok {
			return
		}
		err := g.Check(ip)
		if err2 := g.Check(ip.Unmap()); (err == nil) != (err2 == nil) {
			t.Fatalf("%s and its unmapped form are judged differently", ip)
		}
		if err == nil && (ip.Unmap().IsLoopback() || ip.Unmap().IsPrivate() || ip.IsUnspecified() ||
			ip.Unmap().IsLinkLocalUnicast() || ip.Unmap().IsMulticast()) {
			t.Fatalf("%s permitted", ip)
		}
	})
}
