package relaytest

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/miekg/dns"
)

func query(t *testing.T, addr, name string, qtype uint16) (*dns.Msg, error) {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	c := &dns.Client{Timeout: 500 * time.Millisecond}
	in, _, err := c.Exchange(m, addr)
	return in, err
}

func TestFakeDNS(t *testing.T) {
	t.Parallel()
	z := NewZone()
	z.AddMX("a.test", 10, "mx.a.test")
	z.AddA("mx.a.test", "127.0.0.2", "::1")
	z.AddCNAME("alias.a.test", "mx.a.test")
	z.AddMX("sf.test", 10, "mx.sf.test")
	z.SetServFail("sf.test", true)
	z.AddA("drop.test", "127.0.0.3")
	z.SetDrop("drop.test", true)
	addr := FakeDNS(t, z)

	in, err := query(t, addr, "a.test", dns.TypeMX)
	if err != nil || len(in.Answer) != 1 || in.Answer[0].(*dns.MX).Mx != "mx.a.test." {
		t.Fatalf("MX: %v %v", in, err)
	}
	in, _ = query(t, addr, "alias.a.test", dns.TypeA)
	if len(in.Answer) != 2 || in.Answer[0].Header().Rrtype != dns.TypeCNAME ||
		in.Answer[1].(*dns.A).A.String() != "127.0.0.2" {
		t.Fatalf("CNAME chain: %v", in.Answer)
	}
	in, _ = query(t, addr, "mx.a.test", dns.TypeAAAA)
	if len(in.Answer) != 1 {
		t.Fatalf("AAAA: %v", in.Answer)
	}
	if in, _ = query(t, addr, "nope.test", dns.TypeMX); in.Rcode != dns.RcodeNameError {
		t.Fatalf("unknown name: rcode %d", in.Rcode)
	}
	if in, _ = query(t, addr, "sf.test", dns.TypeMX); in.Rcode != dns.RcodeServerFailure {
		t.Fatalf("servfail switch: rcode %d", in.Rcode)
	}
	if _, err = query(t, addr, "drop.test", dns.TypeA); err == nil {
		t.Fatal("dropped query answered")
	}
	if z.Queries("a.test", dns.TypeMX) != 1 {
		t.Fatalf("query count %d", z.Queries("a.test", dns.TypeMX))
	}
}

// TestFakeDNSTXT: zone lines as keygen prints them keep their strings,
// LookupTXT concatenates them, Reset empties the zone, and the truncation
// switch sets TC on UDP answers only.
func TestFakeDNSTXT(t *testing.T) {
	t.Parallel()
	z, addr := ServeZone(t, `s1._domainkey.Example.com. IN TXT "v=DKIM1; k=ed25519; " "p=abc"`,
		"b.test. IN MX 5 mx.b.test.")
	in, err := query(t, addr, "s1._domainkey.example.com", dns.TypeTXT)
	if err != nil || len(in.Answer) != 1 || len(in.Answer[0].(*dns.TXT).Txt) != 2 {
		t.Fatalf("TXT: %v %v", in, err)
	}
	got, err := z.LookupTXT("S1._domainkey.example.com.")
	if err != nil || len(got) != 1 || got[0] != "v=DKIM1; k=ed25519; p=abc" {
		t.Fatalf("LookupTXT = %q, %v", got, err)
	}
	if in, _ = query(t, addr, "b.test", dns.TypeMX); len(in.Answer) != 1 || in.Answer[0].(*dns.MX).Preference != 5 {
		t.Fatalf("MX line: %v", in.Answer)
	}
	z.SetTruncate("b.test", true)
	if in, _ = query(t, addr, "b.test", dns.TypeMX); !in.Truncated || len(in.Answer) != 0 {
		t.Fatalf("truncate switch over UDP: TC=%v, %d answers", in.Truncated, len(in.Answer))
	}
	tcp := &dns.Client{Net: "tcp", Timeout: 5 * time.Second}
	m := new(dns.Msg)
	m.SetQuestion("b.test.", dns.TypeMX)
	if in, _, err = tcp.Exchange(m, addr); err != nil || in.Truncated || len(in.Answer) != 1 {
		t.Fatalf("truncate switch over TCP: %v %v", in, err)
	}
	z.Reset()
	if _, err := z.LookupTXT("s1._domainkey.example.com"); err == nil {
		t.Fatal("record left after Reset")
	}
	if in, _ = query(t, addr, "b.test", dns.TypeMX); in.Rcode != dns.RcodeNameError {
		t.Fatalf("after Reset: rcode %d", in.Rcode)
	}
}

func TestFakeMXRecordsAndScripts(t *testing.T) {
	t.Parallel()
	m := FakeMX(t, No8BitMIME(), DSN())
	if ip := net.ParseIP(m.IP); ip == nil || !ip.IsLoopback() {
		t.Fatalf("fake MX on %s", m.IP)
	}
	other := FakeMX(t, Port(m.Port))
	if other.Port != m.Port || other.IP == m.IP {
		t.Fatalf("second MX %s, first %s", other.Addr, m.Addr)
	}
	m.ReplyRcpt("no@x.test", Err(550, "5.1.1", "unknown"), -1)
	c, err := smtp.Dial(m.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.Extension("8BITMIME"); ok {
		t.Fatal("8BITMIME advertised despite No8BitMIME")
	}
	if ok, _ := c.Extension("DSN"); !ok {
		t.Fatal("DSN not advertised")
	}
	if err := c.Mail("a@s.test", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("no@x.test", nil); err == nil || !strings.Contains(err.Error(), "550") {
		t.Fatalf("scripted 550: %v", err)
	}
	if err := c.Rcpt("yes@x.test", nil); err != nil {
		t.Fatal(err)
	}
	w, _ := c.Data()
	_, _ = w.Write([]byte("Subject: x\r\n\r\nhi\r\n"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	msgs := m.Messages()
	if len(msgs) != 1 || msgs[0].Helo != "client.test" || msgs[0].Rcpts[0] != "yes@x.test" || m.Connections() != 1 {
		t.Fatalf("recorded %+v, %d connections", msgs, m.Connections())
	}
}

func TestLoopbackDialerRefusesTheWorld(t *testing.T) {
	t.Parallel()
	d := &LoopbackDialer{}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := d.DialContext(ctx, "tcp", "192.0.2.1:25"); err == nil || !strings.Contains(err.Error(), "refusing") {
		t.Fatalf("dialled a non-loopback address: %v", err)
	}
}
