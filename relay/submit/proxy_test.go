package submit

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/proxyproto"
	"github.com/jetrelay/jetrelay/relay/relaytest"
)

// The test balancer connects from lbAddr, the only proxy_from address;
// 127.0.0.1 stands for everyone else.
const (
	lbAddr    = "127.0.0.2"
	otherAddr = "127.0.0.1"
)

// proxyConfig: listeners 0 (STARTTLS) and 1 (implicit TLS) expect PROXY
// headers from lbAddr; listener 2 does not.
func proxyConfig(t *testing.T, mods ...func(*config.Config)) *config.Config {
	t.Helper()
	return testConfig(t, append([]func(*config.Config){func(c *config.Config) {
		c.Submission.Listeners[lnStartTLS].ProxyProtocol = true
		c.Submission.Listeners[lnImplicit].ProxyProtocol = true
		c.Submission.ProxyFrom = []string{lbAddr + "/32"}
	}}, mods...)...)
}

// v2Sig is the v2 header's signature (haproxy PROXY protocol spec §2.2).
const v2Sig = "\r\n\r\n\x00\r\nQUIT\n"

// v1 and v2 headers for a TCP4 client.
func v1For(client string) []byte {
	return proxyproto.AppendV1(nil, proxyproto.Header{Transport: proxyproto.TCP4,
		Source: netip.MustParseAddrPort(client), Destination: netip.MustParseAddrPort("198.51.100.1:587")})
}

func v2For(client string) []byte {
	src := netip.MustParseAddrPort(client)
	tr := proxyproto.TCP4
	if src.Addr().Is6() {
		tr = proxyproto.TCP6
	}
	dst := netip.MustParseAddrPort("198.51.100.1:465")
	if tr == proxyproto.TCP6 {
		dst = netip.MustParseAddrPort("[2001:db8::1]:465")
	}
	tlv := []byte{0x04, 0x00, 0x02, 'h', 'i'} // PP2_TYPE_NOOP, skipped
	return proxyproto.AppendV2(nil, proxyproto.Header{Transport: tr, Source: src, Destination: dst}, tlv)
}

// dialProxy connects from source, sends header and, on an implicit-TLS
// listener, then shakes hands; it returns the client and the first reply,
// or the error that ended the connection.
func (h *harness) dialProxy(listener int, source string, header []byte) (*rawClient, smtpReply, error) {
	h.t.Helper()
	d := &net.Dialer{Timeout: testTimeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}}
	conn, err := d.Dial("tcp", h.addr(listener))
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { conn.Close() })
	c := &rawClient{t: h.t, conn: conn, r: textproto.NewReader(bufio.NewReader(conn))}
	if len(header) > 0 {
		c.send(string(header))
	}
	if h.cfg.Submission.Listeners[listener].TLS == "implicit" {
		tc := tls.Client(conn, h.client)
		_ = tc.SetDeadline(time.Now().Add(testTimeout))
		if err := tc.Handshake(); err != nil {
			return c, smtpReply{}, err
		}
		c.conn, c.r = tc, textproto.NewReader(bufio.NewReader(tc))
	}
	r, err := c.readErr()
	return c, r, err
}

// closedSilently checks that the server closed the connection without
// sending a byte.
func closedSilently(t testing.TB, c *rawClient) {
	t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(testTimeout))
	b, err := io.ReadAll(c.conn)
	var oe *net.OpError
	if len(b) > 0 || (err != nil && !(errors.As(err, &oe) && !oe.Timeout())) {
		t.Fatalf("got %q, %v; want a close without a greeting", b, err)
	}
}

// rejectedWith waits for a rejected event whose reason contains want.
func (h *harness) rejectedWith(want string) map[string]any {
	h.t.Helper()
	var found map[string]any
	relaytest.Eventually(h.t, "rejected event with "+want, func() bool {
		for _, e := range h.logs.events("rejected") {
			if r, _ := e["reason"].(string); strings.Contains(r, want) {
				found = e
				return true
			}
		}
		return false
	})
	return found
}

// TestProxyClientAddressEverywhere: through a balancer, the header's
// client address is the one in the session log, the accepted event and the
// Received: field, over STARTTLS and implicit TLS, v1 and v2, IPv4 and IPv6.
func TestProxyClientAddressEverywhere(t *testing.T) {
	t.Parallel()
	h := start(t, proxyConfig(t))
	cases := []struct {
		name     string
		listener int
		header   []byte
		remote   string
		literal  string
	}{
		{"v1 STARTTLS", lnStartTLS, v1For("192.0.2.10:40000"), "192.0.2.10:40000", "[192.0.2.10]"},
		{"v2 implicit TLS", lnImplicit, v2For("192.0.2.11:40001"), "192.0.2.11:40001", "[192.0.2.11]"},
		{"v2 IPv6 STARTTLS", lnStartTLS, v2For("[2001:db8::10]:40002"), "[2001:db8::10]:40002", "[IPv6:2001:db8::10]"},
	}
	for _, tc := range cases {
		c, g, err := h.dialProxy(tc.listener, lbAddr, tc.header)
		if err != nil || g.Code != 220 {
			t.Fatalf("%s: greeting %v, %v", tc.name, g, err)
		}
		if tc.listener == lnStartTLS {
			c.expect("EHLO client.test", 250, "")
			c.starttls(h.client)
		}
		c.expect("EHLO client.test", 250, "")
		c.expect("AUTH PLAIN "+plain(appUser, appPass), 235, "2.0.0")
		id := sendRaw(t, c, "MAIL FROM:<a@example.com>", "RCPT TO:<x@one.test>", message("a@example.com", ""))
		b := body(t, h.lease(1)[id+"/one.test"])
		if !bytes.HasPrefix(b, []byte("Received: from client.test ("+tc.literal+")")) {
			t.Fatalf("%s: Received: does not name the client: %q", tc.name, b[:min(len(b), 120)])
		}
		var ev map[string]any
		for _, e := range h.logs.events("accepted") {
			if e["queue_id"] == id {
				ev = e
			}
		}
		if ev == nil || ev["remote_addr"] != tc.remote {
			t.Fatalf("%s: accepted event %v, want remote_addr %s", tc.name, ev, tc.remote)
		}
	}
	if strings.Contains(h.logs.String(), lbAddr) {
		t.Fatalf("the balancer's address was logged instead of the client's:\n%s", h.logs.String())
	}
}

// TestProxyPerIPLimit: max_connections_per_ip counts the header's client,
// not the balancer all clients come through.
func TestProxyPerIPLimit(t *testing.T) {
	t.Parallel()
	h := start(t, proxyConfig(t, func(c *config.Config) { c.Submission.MaxConnectionsPerIP = 1 }))
	if _, g, err := h.dialProxy(lnStartTLS, lbAddr, v1For("192.0.2.10:1")); err != nil || g.Code != 220 {
		t.Fatalf("first connection of 192.0.2.10: %v, %v", g, err)
	}
	_, g, err := h.dialProxy(lnStartTLS, lbAddr, v1For("192.0.2.10:2"))
	if err != nil || g.Code != 421 || g.Enh != "4.7.0" {
		t.Fatalf("second connection of 192.0.2.10: %v, %v; want 421 4.7.0", g, err)
	}
	if e := h.rejectedWith("max_connections_per_ip"); e["ip"] != "192.0.2.10" {
		t.Fatalf("refusal names %v, want the client", e["ip"])
	}
	if _, g, err := h.dialProxy(lnImplicit, lbAddr, v2For("192.0.2.11:1")); err != nil || g.Code != 220 {
		t.Fatalf("another client through the same balancer: %v, %v", g, err)
	}
}

// TestProxyAuthBrake: the auth brake bans the header's client address
// (implicit TLS behind the header); other clients of the same balancer,
// and the balancer itself, are not banned.
func TestProxyAuthBrake(t *testing.T) {
	t.Parallel()
	h := start(t, proxyConfig(t, func(c *config.Config) { c.Submission.AuthFailures.Max = 2 }))
	login := func(client, pass string) smtpReply {
		t.Helper()
		c, g, err := h.dialProxy(lnImplicit, lbAddr, v2For(client))
		if err != nil || g.Code != 220 {
			return g
		}
		c.expect("EHLO client.test", 250, "")
		return c.cmd("AUTH PLAIN " + plain(appUser, pass))
	}
	for range 2 {
		if r := login("192.0.2.20:1", "wrong"); r.Code != 535 {
			t.Fatalf("failure: %v", r)
		}
	}
	relaytest.Eventually(t, "the client banned at connect", func() bool {
		r := login("192.0.2.20:2", appPass)
		return r.Code == 421 && r.Enh == "4.7.0"
	})
	if e := h.rejectedWith("banned"); e["ip"] != "192.0.2.20" {
		t.Fatalf("ban refusal names %v, want the client", e["ip"])
	}
	if r := login("192.0.2.21:1", appPass); r.Code != 235 {
		t.Fatalf("another client of the balancer: %v", r)
	}
	// The balancer's own address is not banned (listener 2 reads no header).
	if _, g, err := h.dialProxy(lnStartTLS2, lbAddr, nil); err != nil || g.Code != 220 {
		t.Fatalf("the balancer on a listener without PROXY: %v, %v", g, err)
	}
}

// refusal is a connection a PROXY listener must close without a greeting.
type refusal struct {
	name     string
	listener int
	source   string
	header   string
	reason   string // in the rejected event
}

// expectRefused sends each case's bytes and checks that the connection is
// closed without a byte and that a rejected event gives the reason.
func (h *harness) expectRefused(cases []refusal) {
	h.t.Helper()
	for _, tc := range cases {
		dst := net.TCPAddrFromAddrPort(netip.MustParseAddrPort(h.addr(tc.listener)))
		c, err := net.DialTCP("tcp", &net.TCPAddr{IP: net.ParseIP(tc.source)}, dst)
		if err != nil {
			h.t.Fatal(err)
		}
		rc := &rawClient{t: h.t, conn: c}
		if tc.header != "" {
			rc.send(tc.header)
		}
		closedSilently(h.t, rc)
		_ = c.Close()
		relaytest.Eventually(h.t, tc.name+": rejected event with "+tc.reason, func() bool {
			for _, e := range h.logs.events("rejected") {
				if r, _ := e["reason"].(string); e["remote_addr"] == c.LocalAddr().String() {
					return strings.Contains(r, tc.reason)
				}
			}
			return false
		})
	}
	if n := h.srv.conns.open(); n != 0 {
		h.t.Fatalf("%d refused connections hold a slot", n)
	}
}

// TestProxyRefused: a connection to a PROXY listener from outside
// proxy_from or with a malformed header is closed without a greeting
// (also before TLS on an implicit-TLS listener), and the reason is logged.
func TestProxyRefused(t *testing.T) {
	t.Parallel()
	h := start(t, proxyConfig(t))
	h.expectRefused([]refusal{
		{"outside proxy_from", lnStartTLS, otherAddr, string(v1For("192.0.2.30:1")), "not allowed"},
		{"outside proxy_from, implicit", lnImplicit, otherAddr, string(v2For("192.0.2.31:1")), "not allowed"},
		{"SMTP instead", lnStartTLS, lbAddr, "EHLO client.test\r\n", "invalid PROXY protocol header"},
		{"bad port", lnStartTLS, lbAddr, "PROXY TCP4 192.0.2.33 198.51.100.1 70000 587\r\n", "invalid PROXY"},
		{"v1 over 107 bytes", lnStartTLS, lbAddr, "PROXY UNKNOWN " + strings.Repeat("x", 100) + "\r\n", "over 107"},
		{"v2 UDP", lnStartTLS, lbAddr, v2Sig + "\x21\x12\x00\x0c" + strings.Repeat("\x00", 12), "family/protocol"},
		{"v2 version 1", lnImplicit, lbAddr, v2Sig + "\x11\x11\x00\x0c" + strings.Repeat("\x00", 12), "version"},
	})
	// An implicit-TLS client that skips the header: its ClientHello is not a header.
	if _, _, err := h.dialProxy(lnImplicit, lbAddr, nil); err == nil {
		t.Fatal("TLS handshake without a PROXY header succeeded")
	}
}

// TestProxyHeaderTimeout: an allowed balancer that sends no header, or
// half of one, within the limit (shortened here) is closed ungreeted.
func TestProxyHeaderTimeout(t *testing.T) {
	t.Parallel()
	h := start(t, proxyConfig(t), harnessOpts{proxyTimeout: 50 * time.Millisecond})
	h.expectRefused([]refusal{
		{"no header", lnStartTLS, lbAddr, "", "no PROXY protocol header within"},
		{"no header, implicit", lnImplicit, lbAddr, "", "no PROXY protocol header within"},
		{"half a header", lnStartTLS, lbAddr, "PROXY TCP4 192.0.2.32 ", "no PROXY protocol header within"},
	})
}

// TestProxyLocal: a v2 LOCAL header (a balancer's health check) is greeted
// and the connection keeps the balancer's own address; so does v1 UNKNOWN.
func TestProxyLocal(t *testing.T) {
	t.Parallel()
	h := start(t, proxyConfig(t))
	for _, hdr := range [][]byte{
		proxyproto.AppendV2(nil, proxyproto.Header{Command: proxyproto.Local}, nil),
		[]byte("PROXY UNKNOWN\r\n"),
	} {
		c, g, err := h.dialProxy(lnImplicit, lbAddr, hdr)
		if err != nil || g.Code != 220 {
			t.Fatalf("%q: greeting %v, %v", hdr, g, err)
		}
		var ips []string
		for tc := range h.srv.conns.snapshot() {
			ips = append(ips, tc.ip)
		}
		if len(ips) != 1 || ips[0] != lbAddr {
			t.Fatalf("%q: open connections from %v, want only the balancer %s", hdr, ips, lbAddr)
		}
		c.expect("QUIT", 221, "")
		_ = c.conn.Close()
		relaytest.Eventually(t, "connection closed", func() bool { return h.srv.conns.open() == 0 })
	}
}

// TestProxyFromUnusedWarns: proxy_from without a proxy_protocol listener
// is logged as a warning at start (no header is read anywhere).
func TestProxyFromUnusedWarns(t *testing.T) {
	t.Parallel()
	h := start(t, testConfig(t, func(c *config.Config) { c.Submission.ProxyFrom = []string{lbAddr} }))
	if !strings.Contains(h.logs.String(), `"event":"proxy_from_unused"`) {
		t.Fatalf("no proxy_from_unused warning:\n%s", h.logs.String())
	}
	if _, g, err := h.dialProxy(lnStartTLS, lbAddr, nil); err != nil || g.Code != 220 {
		t.Fatalf("listener without proxy_protocol: %v, %v", g, err)
	}
}
