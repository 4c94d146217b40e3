// Package dkimtest holds test helpers for DKIM: a fake DNS server that
// serves key records given as zone-file lines, as `jetrelay dkim keygen`
// prints them. It is for tests only.
package dkimtest

import (
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// DNS is a fake authoritative DNS server on a random loopback UDP port. It
// answers TXT queries for the records it was given and NXDOMAIN otherwise.
type DNS struct {
	// Addr is the server's "127.0.0.1:port".
	Addr string

	mu  sync.Mutex
	txt map[string][]*dns.TXT // lower-case FQDN → records
}

// FakeDNS starts a server that is stopped when the test ends. Each zone
// line (such as `s1._domainkey.example.com. IN TXT "v=DKIM1; …"`) is parsed
// with miekg/dns's zone parser, so a malformed line fails the test.
func FakeDNS(t testing.TB, zoneLines ...string) *DNS {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &DNS{Addr: pc.LocalAddr().String(), txt: make(map[string][]*dns.TXT)}
	for _, l := range zoneLines {
		d.Add(t, l)
	}
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, Handler: d, NotifyStartedFunc: func() { close(started) }}
	go func() { _ = srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = srv.Shutdown() })
	return d
}

// Add parses a zone-file line and serves its TXT record in addition to the others.
func (d *DNS) Add(t testing.TB, zoneLine string) {
	t.Helper()
	rr, err := dns.NewRR(zoneLine)
	if err != nil {
		t.Fatalf("zone line %q: %v", zoneLine, err)
	}
	txt, ok := rr.(*dns.TXT)
	if !ok {
		t.Fatalf("zone line %q is a %T, want TXT", zoneLine, rr)
	}
	for _, s := range txt.Txt {
		if len(s) > 255 {
			t.Fatalf("zone line %q: string of %d characters (max 255)", zoneLine, len(s))
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	name := strings.ToLower(txt.Hdr.Name)
	d.txt[name] = append(d.txt[name], txt)
}

// Reset removes every record.
func (d *DNS) Reset() {
	d.mu.Lock()
	defer d.mu.Unlock()
	clear(d.txt)
}

// ServeDNS implements dns.Handler.
func (d *DNS) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	resp := new(dns.Msg)
	resp.SetReply(req)
	resp.Authoritative = true
	if len(req.Question) == 1 {
		q := req.Question[0]
		d.mu.Lock()
		recs := d.txt[strings.ToLower(q.Name)]
		d.mu.Unlock()
		switch {
		case len(recs) == 0:
			resp.Rcode = dns.RcodeNameError
		case q.Qtype == dns.TypeTXT:
			for _, r := range recs {
				resp.Answer = append(resp.Answer, dns.Copy(r))
			}
		}
	}
	_ = w.WriteMsg(resp)
}

// LookupTXT asks the server directly, concatenating each record's strings
// (RFC 6376 §3.6.2.2). Its shape is go-msgauth's VerifyOptions.LookupTXT.
func (d *DNS) LookupTXT(name string) ([]string, error) {
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), dns.TypeTXT)
	q.SetEdns0(4096, false)
	resp, err := dns.Exchange(q, d.Addr)
	if err != nil {
		return nil, err
	}
	if resp.Rcode != dns.RcodeSuccess {
		return nil, &net.DNSError{
			Err: dns.RcodeToString[resp.Rcode], Name: name, IsNotFound: resp.Rcode == dns.RcodeNameError,
		}
	}
	var out []string
	for _, rr := range resp.Answer {
		if t, ok := rr.(*dns.TXT); ok {
			out = append(out, strings.Join(t.Txt, ""))
		}
	}
	return out, nil
}
