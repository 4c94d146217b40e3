package relaytest

import (
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// PTR records answer at the reverse name; a long TXT record comes as
// several character-strings; an answer too big for UDP comes truncated.
func TestFakeDNSRecords(t *testing.T) {
	t.Parallel()
	z := NewZone()
	z.AddPTR("192.0.2.7", "mail.a.test.")
	z.AddPTR("2001:db8::7", "mail6.a.test")
	long := strings.Repeat("k", 600)
	z.AddTXTRecords("long.a.test", long)
	for i := 0; i < 40; i++ {
		z.AddTXTRecords("big.a.test", strings.Repeat("b", 100))
	}
	addr := FakeDNS(t, z)
	in, err := query(t, addr, "7.2.0.192.in-addr.arpa", dns.TypePTR)
	if err != nil || len(in.Answer) != 1 || in.Answer[0].(*dns.PTR).Ptr != "mail.a.test." {
		t.Fatalf("PTR v4: %v %v", in, err)
	}
	rev, _ := dns.ReverseAddr("2001:db8::7")
	in, err = query(t, addr, rev, dns.TypePTR)
	if err != nil || len(in.Answer) != 1 || in.Answer[0].(*dns.PTR).Ptr != "mail6.a.test." {
		t.Fatalf("PTR v6: %v %v", in, err)
	}
	in, err = queryEDNS(addr, "long.a.test")
	if err != nil || len(in.Answer) != 1 {
		t.Fatalf("TXT: %v %v", in, err)
	}
	if parts := in.Answer[0].(*dns.TXT).Txt; len(parts) != 3 || strings.Join(parts, "") != long {
		t.Fatalf("TXT parts: %d", len(parts))
	}
	in, err = query(t, addr, "big.a.test", dns.TypeTXT)
	if err != nil || !in.Truncated || len(in.Answer) >= 40 {
		t.Fatalf("big over UDP: truncated=%v answers=%d err=%v", in != nil && in.Truncated, len(in.Answer), err)
	}
}

// queryEDNS asks for TXT over UDP offering a 4096-octet EDNS0 buffer.
func queryEDNS(addr, name string) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeTXT)
	m.SetEdns0(4096, false)
	c := &dns.Client{Timeout: 5 * time.Second, UDPSize: 4096}
	in, _, err := c.Exchange(m, addr)
	return in, err
}
