package smtpclient_test

import (
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/relay/relaytest"
	"github.com/jetrelay/jetrelay/relay/smtpclient"
)

// dnsResolver is the production resolver asking a fake DNS server for z.
func dnsResolver(t *testing.T, z *relaytest.Zone) smtpclient.Resolver {
	t.Helper()
	r, err := smtpclient.NewResolver(smtpclient.DNSOptions{Servers: []string{relaytest.FakeDNS(t, z)},
		Timeout: time.Second, LoopbackOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Gathering through real DNS answers, without a queue: no MX records means
// the domain is its own MX (RFC 5321 §5.1); a null MX (RFC 7505) fails
// 556 5.1.10 and NXDOMAIN 550 5.1.2 at once, SERVFAIL is temporary
// (4.4.3), none of them connecting anywhere.
func TestGatherOverDNS(t *testing.T) {
	t.Parallel()
	m := relaytest.FakeMX(t)
	z := relaytest.NewZone()
	z.AddA("implicit.test", m.IP)
	z.AddMX("null.test", 0, ".")
	z.AddA("null.test", m.IP) // an address with a working server: not used
	z.AddMX("flaky.test", 10, "mx.flaky.test")
	z.AddA("mx.flaky.test", m.IP)
	z.SetServFail("flaky.test", true)
	c := newClient(t, dnsResolver(t, z), m.Port)

	for _, tc := range []struct {
		rcpt string
		code int
		enh  string
	}{{"x@null.test", 556, "5.1.10"}, {"x@missing.test", 550, "5.1.2"}, {"x@flaky.test", 451, "4.4.3"}} {
		a := deliver(t, c, tc.rcpt)
		if len(a.Replies) != 1 || a.Replies[0].Code != tc.code || a.Replies[0].Enh != tc.enh ||
			a.Replies[0].Temporary() != (tc.code/100 == 4) {
			t.Fatalf("%s: replies %+v, want %d %s", tc.rcpt, a.Replies, tc.code, tc.enh)
		}
	}
	if m.Connections() != 0 {
		t.Fatalf("%d connections for a null MX, NXDOMAIN or SERVFAIL", m.Connections())
	}
	a := deliver(t, c, "x@implicit.test")
	wantReply(t, a, 250, "2.0.0")
	if m.Received("x@implicit.test") != 1 {
		t.Fatal("the implicit MX did not get the mail")
	}
}

// MX preference through DNS: the most preferred MX gets the mail; when it
// refuses connections the next one does, in the same attempt; EHLO names
// the configured hostname.
func TestMXPreferenceAndFallback(t *testing.T) {
	t.Parallel()
	primary := relaytest.FakeMX(t)
	backup := relaytest.FakeMX(t, relaytest.Port(primary.Port))
	z := relaytest.NewZone()
	for dom, ips := range map[string][2]string{"pref.test": {primary.IP, backup.IP},
		"fallback.test": {relaytest.ClosedAddr(t, primary.Port), backup.IP}} {
		z.AddMX(dom, 10, "mx1."+dom)
		z.AddMX(dom, 20, "mx2."+dom)
		z.AddA("mx1."+dom, ips[0])
		z.AddA("mx2."+dom, ips[1])
	}
	c := newClient(t, dnsResolver(t, z), primary.Port)
	wantReply(t, deliver(t, c, "a@pref.test"), 250, "2.0.0")
	a := deliver(t, c, "b@fallback.test")
	wantReply(t, a, 250, "2.0.0")
	if primary.Received("a@pref.test") != 1 || backup.Received("b@fallback.test") != 1 ||
		backup.Received("a@pref.test") != 0 || primary.Received("b@fallback.test") != 0 {
		t.Fatal("mail went to the wrong MX")
	}
	if a.Conn.MX != "mx2.fallback.test" || a.Conn.IP != backup.IP || a.Conn.Port != backup.Port {
		t.Fatalf("connection %+v, want mx2.fallback.test at %s:%d", a.Conn, backup.IP, backup.Port)
	}
	if msgs := primary.Messages(); msgs[0].Helo != "relay.test" {
		t.Fatalf("EHLO name %q, want the configured hostname", msgs[0].Helo)
	}
}

// An MX named by an IP address is skipped; an MX target that is a CNAME
// is followed (with a warning) and the MX name is kept.
func TestMXNameQuirks(t *testing.T) {
	t.Parallel()
	m := relaytest.FakeMX(t)
	z := relaytest.NewZone()
	z.AddMX("quirk.test", 5, m.IP) // "MX 5 127.0.0.x": invalid, skipped
	z.AddMX("quirk.test", 10, "alias.quirk.test")
	z.AddCNAME("alias.quirk.test", "real.quirk.test")
	z.AddA("real.quirk.test", m.IP)
	a := deliver(t, newClient(t, dnsResolver(t, z), m.Port), "x@quirk.test")
	wantReply(t, a, 250, "2.0.0")
	if a.Conn.MX != "alias.quirk.test" {
		t.Fatalf("delivered via %q", a.Conn.MX)
	}
	if m.Connections() != 1 {
		t.Fatalf("%d connections: the IP-literal MX was used", m.Connections())
	}
}

// A server that accepts TCP and never greets times out (greeting timeout)
// and the next MX gets the mail in the same attempt.
func TestSilentServerTimesOutToNextMX(t *testing.T) {
	t.Parallel()
	silent := relaytest.FakeMX(t, relaytest.Hang())
	good := relaytest.FakeMX(t, relaytest.Port(silent.Port))
	z := newZone()
	z.mx["silent.test"] = []smtpclient.MX{{Host: "mx1.silent.test", Pref: 10}, {Host: "mx2.silent.test", Pref: 20}}
	z.a["mx1.silent.test"], z.a["mx2.silent.test"] = []string{silent.IP}, []string{good.IP}
	c := newClient(t, z, silent.Port, func(o *smtpclient.Options) { o.Timeouts.Greeting = 300 * time.Millisecond })
	a := deliver(t, c, "x@silent.test")
	wantReply(t, a, 250, "2.0.0")
	if silent.Connections() == 0 || good.Received("x@silent.test") != 1 || a.Conn.MX != "mx2.silent.test" {
		t.Fatalf("silent MX tried %d times, second MX received %d, via %q",
			silent.Connections(), good.Received("x@silent.test"), a.Conn.MX)
	}
}
