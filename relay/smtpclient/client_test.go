package smtpclient_test

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/relay/netguard"
	"github.com/jetrelay/jetrelay/relay/relaytest"
	"github.com/jetrelay/jetrelay/relay/safetext"
	"github.com/jetrelay/jetrelay/relay/smtpclient"
)

// zone is a map-based Resolver: MX records and A records by name; any
// other name is NXDOMAIN.
type zone struct {
	mx map[string][]smtpclient.MX
	a  map[string][]string
}

func newZone() *zone { return &zone{mx: map[string][]smtpclient.MX{}, a: map[string][]string{}} }

// add publishes "dom MX 10 mx.dom" with mx.dom → ips.
func (z *zone) add(dom string, ips ...string) {
	host := "mx." + dom
	z.mx[dom] = append(z.mx[dom], smtpclient.MX{Host: host, Pref: 10})
	z.a[host] = append(z.a[host], ips...)
}

func (z *zone) LookupMX(_ context.Context, d string) ([]smtpclient.MX, time.Duration, error) {
	if mx, ok := z.mx[d]; ok {
		return mx, time.Minute, nil
	}
	if _, ok := z.a[d]; ok {
		return nil, time.Minute, nil
	}
	return nil, time.Minute, &smtpclient.DNSError{Name: d, Type: "MX", Kind: smtpclient.DNSNotFound}
}

func (z *zone) LookupIP(_ context.Context, h string) (smtpclient.HostAddrs, error) {
	ips, ok := z.a[h]
	if !ok {
		return smtpclient.HostAddrs{}, &smtpclient.DNSError{Name: h, Type: "A", Kind: smtpclient.DNSNotFound}
	}
	out := smtpclient.HostAddrs{TTL: time.Minute}
	for _, ip := range ips {
		out.IPs = append(out.IPs, net.ParseIP(ip))
	}
	return out, nil
}

// newClient is a client for resolver z and MX port, short timeouts, dialling
// loopback only and without a network guard unless edit adds one.
func newClient(t *testing.T, z smtpclient.Resolver, port int, edit ...func(*smtpclient.Options)) *smtpclient.Client {
	t.Helper()
	s := 3 * time.Second
	o := smtpclient.Options{Dialer: &relaytest.LoopbackDialer{}, Resolver: z, Logger: relaytest.Logger(t),
		Hostname: "relay.test", Port: port, Timeouts: smtpclient.Timeouts{Connect: s, Greeting: s, Mail: s,
			Rcpt: s, DataInit: s, DataBlock: s, DataFinal: s, Idle: s}}
	for _, f := range edit {
		f(&o)
	}
	c, err := smtpclient.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// deliver runs one attempt at a one-recipient message to rcpt.
func deliver(t *testing.T, c *smtpclient.Client, rcpt string, edit ...func(*smtpclient.Message)) smtpclient.Attempt {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m := &smtpclient.Message{From: "a@sender.test", Rcpts: []smtpclient.Recipient{{Addr: rcpt}},
		Body: []byte("Subject: x\r\n\r\nhello\r\n")}
	for _, f := range edit {
		f(m)
	}
	_, dom, _ := strings.Cut(rcpt, "@")
	tr, err := c.MX(ctx, dom, m.RequireTLS)
	if err != nil {
		t.Fatal(err)
	}
	a := c.Deliver(ctx, tr, m, nil)
	if a.Session != nil {
		a.Session.Quit(time.Second)
	}
	return a
}

func wantReply(t *testing.T, a smtpclient.Attempt, code int, enh string) {
	t.Helper()
	if len(a.Replies) != 1 || a.Replies[0].Code != code || a.Replies[0].Enh != enh {
		t.Fatalf("replies %+v, want %d %s", a.Replies, code, enh)
	}
	if n := len(a.Replies[0].Text); n > safetext.MaxReply+len(safetext.TruncatedMark) {
		t.Fatalf("reply text of %d bytes kept (limit 4 KiB)", n)
	}
}

// The conversation is testable with a fake server alone: no queue.
func TestDeliverToFakeMX(t *testing.T) {
	t.Parallel()
	m := relaytest.FakeMX(t)
	z := newZone()
	z.add("ok.test", m.IP)
	a := deliver(t, newClient(t, z, m.Port), "x@ok.test")
	wantReply(t, a, 250, "2.0.0")
	if !a.Reached || m.Received("x@ok.test") != 1 || a.Conn.MX != "mx.ok.test" {
		t.Fatalf("attempt %+v, received %d", a, m.Received("x@ok.test"))
	}
}

// Hostile replies to MAIL, lock-step and pipelined: an endless line and
// a 12 MB multi-line 450 end the attempt with 451 4.5.0 (go-smtp stops
// reading at its limits and the connection is closed), and what is kept
// of a reply is at most 4 KiB.
func TestHostileReplies(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		pipelined bool
		huge      bool // one endless line; else 12 MB of lines
	}{{"line", false, true}, {"line_pipelined", true, true}, {"lines", false, false}, {"lines_pipelined", true, false}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			raw := &relaytest.RawMX{Mail: relaytest.ManyLines("450", 12<<20)}
			if tc.huge {
				raw.Mail = relaytest.StreamLine("250", 256<<20)
			}
			if tc.pipelined {
				raw.Extensions = []string{"PIPELINING"}
			}
			relaytest.FakeRawMX(t, raw, 0)
			z := newZone()
			z.add("hostile.test", raw.IP)
			a := deliver(t, newClient(t, z, raw.Port), "x@hostile.test")
			wantReply(t, a, 451, "4.5.0")
			if a.Session != nil || raw.Messages() != 0 {
				t.Fatalf("session kept %v, messages %d", a.Session != nil, raw.Messages())
			}
		})
	}
}

// A long but bounded multi-line reply (within go-smtp's limits) is kept
// as the verdict, cut to 4 KiB with control characters escaped.
func TestLongReplyTextIsBounded(t *testing.T) {
	t.Parallel()
	raw := &relaytest.RawMX{Mail: func(w io.Writer) bool {
		for i := 0; i < 30; i++ {
			_, _ = io.WriteString(w, "450-4.2.1 \x1b[2J"+strings.Repeat("z", 1000)+"\r\n")
		}
		_, _ = io.WriteString(w, "450 4.2.1 busy\r\n")
		return true
	}}
	relaytest.FakeRawMX(t, raw, 0)
	z := newZone()
	z.add("long.test", raw.IP)
	a := deliver(t, newClient(t, z, raw.Port), "x@long.test")
	wantReply(t, a, 450, "4.2.1")
	if strings.Contains(a.Replies[0].Text, "\x1b") || !strings.HasSuffix(a.Replies[0].Text, safetext.TruncatedMark) {
		t.Fatalf("reply text not made safe: %q…", a.Replies[0].Text[:80])
	}
}

// A connection lost after the final dot defers the recipient (451 4.4.2)
// and never sends the message to the next MX at once.
func TestLostAfterFinalDotDefers(t *testing.T) {
	t.Parallel()
	first := &relaytest.RawMX{Final: func(io.Writer) bool { return false }}
	relaytest.FakeRawMX(t, first, 0)
	second := relaytest.FakeMX(t, relaytest.Port(first.Port))
	z := newZone()
	z.mx["dot.test"] = []smtpclient.MX{{Host: "mx1.dot.test", Pref: 10}, {Host: "mx2.dot.test", Pref: 20}}
	z.a["mx1.dot.test"], z.a["mx2.dot.test"] = []string{first.IP}, []string{second.IP}
	for _, pipelined := range []bool{false, true} {
		if pipelined {
			first.Extensions = []string{"PIPELINING"}
		}
		a := deliver(t, newClient(t, z, first.Port), "x@dot.test")
		wantReply(t, a, 451, "4.4.2")
		if !a.Reached || a.Session != nil {
			t.Fatalf("pipelined %v: attempt %+v", pipelined, a)
		}
	}
	if first.Messages() != 2 || second.Connections() != 0 {
		t.Fatalf("first MX got %d messages, second MX %d connections", first.Messages(), second.Connections())
	}
}

// The attempt budget: at most MaxAddresses addresses are dialled, and no
// dial starts after AttemptTimeout.
func TestAttemptBudget(t *testing.T) {
	t.Parallel()
	var silent []*relaytest.RawMX
	port := 0
	z := newZone()
	for i := 0; i < 7; i++ {
		m := relaytest.FakeRawMX(t, &relaytest.RawMX{NoGreeting: true}, port)
		port = m.Port
		silent = append(silent, m)
		z.a["mx.silent.test"] = append(z.a["mx.silent.test"], m.IP)
	}
	z.mx["silent.test"] = []smtpclient.MX{{Host: "mx.silent.test", Pref: 10}}
	total := func() int {
		n := 0
		for _, m := range silent {
			n += m.Connections()
		}
		return n
	}
	short := func(o *smtpclient.Options) { o.Timeouts.Greeting = 300 * time.Millisecond }
	a := deliver(t, newClient(t, z, port, short, func(o *smtpclient.Options) { o.MaxAddresses = 3 }), "x@silent.test")
	if len(a.Replies) != 1 || !a.Replies[0].Temporary() || !a.Down {
		t.Fatalf("attempt %+v", a)
	}
	dialled := total()
	if dialled > 3 {
		t.Fatalf("%d addresses dialled, max_mx_addresses 3", dialled)
	}
	// 300 ms greeting per address and a 500 ms cap: the third dial would
	// start after the cap.
	a = deliver(t, newClient(t, z, port, short, func(o *smtpclient.Options) { o.AttemptTimeout = 500 * time.Millisecond }),
		"x@silent.test")
	if n := total() - dialled; n > 2 || len(a.Replies) != 1 || !a.Replies[0].Temporary() {
		t.Fatalf("%d addresses dialled within a 500ms attempt budget; replies %+v", n, a.Replies)
	}
}

// REQUIRETLS (RFC 8689 §5): a certificate that cannot be authenticated
// fails at once with 550 5.7.30, as does a server without REQUIRETLS.
func TestRequireTLSFailsPermanently(t *testing.T) {
	t.Parallel()
	self := relaytest.SelfSigned(t, "mx.rtls.test")
	m := relaytest.FakeMX(t, relaytest.StartTLS(&self), relaytest.RequireTLS())
	z := newZone()
	z.add("rtls.test", m.IP)
	a := deliver(t, newClient(t, z, m.Port), "x@rtls.test", func(m *smtpclient.Message) { m.RequireTLS = true })
	wantReply(t, a, 550, "5.7.30")
	if a.Down || m.Received("x@rtls.test") != 0 {
		t.Fatalf("attempt %+v; received %d", a, m.Received("x@rtls.test"))
	}
}

// MX hosts in denied networks are never dialled: MX → 127.0.0.x and
// "MX 10 localhost." fail 550 5.4.4 without naming the address.
func TestDeniedNetworks(t *testing.T) {
	t.Parallel()
	m := relaytest.FakeMX(t)
	z := newZone()
	z.add("internal.test", m.IP)
	z.mx["lh.test"] = []smtpclient.MX{{Host: "localhost", Pref: 10}}
	z.a["localhost"] = []string{"127.0.0.1"}
	guard := netguard.New(netguard.DefaultDenied(), nil)
	c := newClient(t, z, m.Port, func(o *smtpclient.Options) { o.MXDialer = guard.Dialer(nil) })
	for _, rcpt := range []string{"x@internal.test", "x@lh.test"} {
		a := deliver(t, c, rcpt)
		wantReply(t, a, 550, "5.4.4")
		if a.Down || strings.Contains(a.Replies[0].Text, "127.") {
			t.Fatalf("%s: attempt %+v", rcpt, a)
		}
	}
	if m.Connections() != 0 {
		t.Fatalf("%d connections to a denied address", m.Connections())
	}
}

// An IDN recipient domain is looked up as A-labels.
func TestIDNDomainLookedUpAsALabels(t *testing.T) {
	t.Parallel()
	m := relaytest.FakeMX(t, relaytest.SMTPUTF8())
	z := newZone()
	z.add("xn--bcher-kva.example", m.IP)
	a := deliver(t, newClient(t, z, m.Port), "x@bücher.example", func(m *smtpclient.Message) { m.SMTPUTF8 = true })
	wantReply(t, a, 250, "2.0.0")
}

// One transaction settles each recipient by its own reply: accepted ones
// get the final reply, refused ones their RCPT reply (multiline text kept
// whole), on the pipelined and the lock-step path alike.
func TestPerRecipientReplies(t *testing.T) {
	t.Parallel()
	m := relaytest.FakeMX(t, relaytest.DSN(), relaytest.SMTPUTF8())
	m.ReplyRcpt("later@mixed.test", relaytest.Err(451, "4.2.1", "mailbox busy\nplease retry"), -1)
	m.ReplyRcpt("bad@mixed.test", relaytest.Err(550, "5.1.1", "no such user"), -1)
	z := newZone()
	z.add("mixed.test", m.IP)
	c := newClient(t, z, m.Port)
	for _, utf8ORCPT := range []bool{false, true} { // a UTF-8 ORCPT takes the lock-step path
		a := deliver(t, c, "ok@mixed.test", func(msg *smtpclient.Message) {
			msg.Rcpts = append(msg.Rcpts, smtpclient.Recipient{Addr: "later@mixed.test"},
				smtpclient.Recipient{Addr: "bad@mixed.test"})
			if utf8ORCPT {
				msg.Rcpts[0].ORCPT = "utf-8;ök@mixed.test"
			}
		})
		got := []string{a.Replies[0].String(), a.Replies[1].String(), a.Replies[2].String()}
		if a.Replies[0].Code != 250 || got[1] != "451 4.2.1 mailbox busy\nplease retry" ||
			got[2] != "550 5.1.1 no such user" {
			t.Fatalf("lock-step %v: replies %q", utf8ORCPT, got)
		}
	}
	if m.Received("ok@mixed.test") != 2 || m.Received("bad@mixed.test") != 0 {
		t.Fatalf("received ok %d, bad %d", m.Received("ok@mixed.test"), m.Received("bad@mixed.test"))
	}
}
