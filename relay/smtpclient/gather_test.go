package smtpclient_test

import (
	"testing"

	"github.com/jetrelay/jetrelay/relay/relaytest"
	"github.com/jetrelay/jetrelay/relay/smtpclient"
)

// Gathering without a queue: null MX and NXDOMAIN fail permanently without
// connecting, a domain without MX records is its own MX (RFC 5321 §5.1),
// and the most preferred reachable MX gets the mail.
func TestGather(t *testing.T) {
	t.Parallel()
	m := relaytest.FakeMX(t)
	closed := relaytest.ClosedAddr(t, m.Port)
	z := newZone()
	z.mx["null.test"] = []smtpclient.MX{{Host: "", Pref: 0}}
	z.a["null.test"] = []string{m.IP}
	z.a["implicit.test"] = []string{m.IP}
	z.mx["pref.test"] = []smtpclient.MX{{Host: "mx2.pref.test", Pref: 20}, {Host: "mx1.pref.test", Pref: 10}}
	z.a["mx1.pref.test"], z.a["mx2.pref.test"] = []string{closed}, []string{m.IP}
	c := newClient(t, z, m.Port)

	a := deliver(t, c, "x@null.test")
	wantReply(t, a, 556, "5.1.10")
	a = deliver(t, c, "x@missing.test")
	wantReply(t, a, 550, "5.1.2")
	if m.Connections() != 0 {
		t.Fatalf("%d connections for a null MX / NXDOMAIN", m.Connections())
	}
	a = deliver(t, c, "x@implicit.test")
	wantReply(t, a, 250, "2.0.0")
	a = deliver(t, c, "x@pref.test")
	wantReply(t, a, 250, "2.0.0")
	if a.Conn.MX != "mx2.pref.test" || m.Received("x@pref.test") != 1 {
		t.Fatalf("delivered via %+v", a.Conn)
	}
}

// Domains sharing MX hosts share a destination key; a domain without MX
// records and a route keep their own.
func TestDestinationKeys(t *testing.T) {
	t.Parallel()
	z := newZone()
	for _, d := range []string{"a.test", "b.test"} {
		z.mx[d] = []smtpclient.MX{{Host: "mx2.shared.test", Pref: 20}, {Host: "MX1.shared.test", Pref: 10}}
	}
	z.mx["c.test"] = []smtpclient.MX{{Host: "mx.c.test", Pref: 10}}
	z.a["implicit.test"] = []string{"127.0.0.9"}
	c := newClient(t, z, 25)
	key := func(dom string) string {
		tr, err := c.MX(t.Context(), dom, false)
		if err != nil {
			t.Fatal(err)
		}
		return c.Destination(t.Context(), tr)
	}
	if a, b := key("a.test"), key("b.test"); a != b || a == key("c.test") {
		t.Fatalf("keys a %q b %q c %q", a, b, key("c.test"))
	}
	if k := key("implicit.test"); k == key("a.test") || k == "" {
		t.Fatalf("implicit MX key %q", k)
	}
	rt := c.Route(smtpclient.Route{Key: "route:0", Host: "127.0.0.9", Port: 25})
	if k := c.Destination(t.Context(), rt); k != "route:0" {
		t.Fatalf("route key %q", k)
	}
}
