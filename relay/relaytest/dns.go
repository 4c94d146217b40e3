// Package relaytest is the one shared test-helper package of jetrelay's
// packages: a fake DNS server (Zone, FakeDNS, ServeZone; MX, A, AAAA,
// CNAME, TXT and TLSA records, the AD bit per name (SetSecure), SERVFAIL/
// NXDOMAIN/drop/truncation switches), fake
// MX servers (FakeMX, FakeRawMX), certificates (NewCA, SelfSigned, on
// relay/certgen), polling (Eventually), an event recorder (Events), a
// loopback-only dialer and a test config. Everything listens and dials on
// 127.0.0.0/8 only and is torn down with the test (t.Cleanup). The queue
// layer's own helpers (embedded JetStream) are in queue/queuetest; dkim's
// tests use neither, so that dkim imports nothing of relay.
package relaytest

import (
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// MXRecord is one MX record of a fake zone.
type MXRecord struct {
	Pref uint16
	Host string // "." for a null MX (RFC 7505)
}

// Zone is the fake DNS data, keyed by lower-case names without the
// trailing dot. A name that appears in no map answers NXDOMAIN; a name that
// exists but has no record of the asked type answers NOERROR with no data.
// Change it through its methods while the server runs.
type Zone struct {
	mu       sync.Mutex
	MX       map[string][]MXRecord
	A        map[string][]string
	AAAA     map[string][]string
	CNAME    map[string]string
	TXT      map[string][][]string  // each record's character-strings
	PTR      map[string][]string    // keyed by reverse name (records.go)
	TLSA     map[string][]*dns.TLSA // dnssec.go
	secure   map[string]bool        // dnssec.go: names answered with AD
	servFail map[string]bool
	nxDomain map[string]bool
	drop     map[string]bool
	truncate map[string]bool
	queries  map[string]int
	// TTL of every answer (default 60s).
	TTL uint32
}

// NewZone returns an empty zone.
func NewZone() *Zone {
	return &Zone{MX: map[string][]MXRecord{}, A: map[string][]string{}, AAAA: map[string][]string{},
		CNAME: map[string]string{}, TXT: map[string][][]string{}, PTR: map[string][]string{}, TLSA: map[string][]*dns.TLSA{}, secure: map[string]bool{}, servFail: map[string]bool{},
		nxDomain: map[string]bool{}, drop: map[string]bool{}, truncate: map[string]bool{}, queries: map[string]int{},
		TTL: 60}
}

func key(name string) string { return strings.TrimSuffix(strings.ToLower(name), ".") }

// AddMX adds an MX record for name.
func (z *Zone) AddMX(name string, pref uint16, host string) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.MX[key(name)] = append(z.MX[key(name)], MXRecord{Pref: pref, Host: host})
}

// AddA adds A (or AAAA, for IPv6 literals) records for name.
func (z *Zone) AddA(name string, ips ...string) {
	z.mu.Lock()
	defer z.mu.Unlock()
	for _, ip := range ips {
		if strings.Contains(ip, ":") {
			z.AAAA[key(name)] = append(z.AAAA[key(name)], ip)
		} else {
			z.A[key(name)] = append(z.A[key(name)], ip)
		}
	}
}

// AddCNAME makes name an alias of target.
func (z *Zone) AddCNAME(name, target string) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.CNAME[key(name)] = key(target)
}

// AddTXT adds one TXT record for name made of the character-strings strs
// (RFC 1035 §3.3.14; readers concatenate them, RFC 6376 §3.6.2.2).
func (z *Zone) AddTXT(name string, strs ...string) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.TXT[key(name)] = append(z.TXT[key(name)], strs)
}

// AddLine adds the record of one zone-file line (such as the line
// `jetrelay dkim keygen` prints), parsed by miekg/dns's zone parser: TXT
// (each string at most 255 octets), MX, A, AAAA or CNAME. Anything else, or
// a malformed line, fails the test.
func (z *Zone) AddLine(t testing.TB, zoneLine string) {
	t.Helper()
	rr, err := dns.NewRR(zoneLine)
	if err != nil || rr == nil {
		t.Fatalf("zone line %q: %v", zoneLine, err)
	}
	name := rr.Header().Name
	switch r := rr.(type) {
	case *dns.TXT:
		for _, s := range r.Txt {
			if len(s) > 255 {
				t.Fatalf("zone line %q: string of %d characters (max 255)", zoneLine, len(s))
			}
		}
		z.AddTXT(name, r.Txt...)
	case *dns.MX:
		z.AddMX(name, r.Preference, r.Mx)
	case *dns.A:
		z.AddA(name, r.A.String())
	case *dns.AAAA:
		z.AddA(name, r.AAAA.String())
	case *dns.CNAME:
		z.AddCNAME(name, r.Target)
	default:
		t.Fatalf("zone line %q: %T records are not served", zoneLine, rr)
	}
}

// Reset removes every record (the switches stay).
func (z *Zone) Reset() {
	z.mu.Lock()
	defer z.mu.Unlock()
	clear(z.MX)
	clear(z.A)
	clear(z.AAAA)
	clear(z.CNAME)
	clear(z.TXT)
	clear(z.TLSA)
}

// LookupTXT returns name's TXT records, each one's strings concatenated
// (RFC 6376 §3.6.2.2), straight from the zone without a query. Its shape is
// go-msgauth's VerifyOptions.LookupTXT; an unknown name is a not-found
// *net.DNSError.
func (z *Zone) LookupTXT(name string) ([]string, error) {
	z.mu.Lock()
	defer z.mu.Unlock()
	recs, ok := z.TXT[key(name)]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
	}
	out := make([]string, 0, len(recs))
	for _, r := range recs {
		out = append(out, strings.Join(r, ""))
	}
	return out, nil
}

// SetServFail makes every query for name answer SERVFAIL (or stop doing so).
func (z *Zone) SetServFail(name string, on bool) { z.set(z.servFail, name, on) }

// SetNXDomain makes every query for name answer NXDOMAIN.
func (z *Zone) SetNXDomain(name string, on bool) { z.set(z.nxDomain, name, on) }

// SetDrop makes the server never answer queries for name (a timeout).
func (z *Zone) SetDrop(name string, on bool) { z.set(z.drop, name, on) }

// SetTruncate makes every UDP answer for name empty with the TC bit set
// (RFC 1035 §4.1.1), so a client must ask again over TCP (RFC 7766 §5);
// TCP answers are whole.
func (z *Zone) SetTruncate(name string, on bool) { z.set(z.truncate, name, on) }

// Queries returns how many queries of type qtype (dns.TypeMX, …) for name were answered or dropped.
func (z *Zone) Queries(name string, qtype uint16) int {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.queries[key(name)+"/"+dns.TypeToString[qtype]]
}

func (z *Zone) set(m map[string]bool, name string, on bool) {
	z.mu.Lock()
	defer z.mu.Unlock()
	m[key(name)] = on
}

func (z *Zone) exists(n string) bool {
	return z.MX[n] != nil || z.A[n] != nil || z.AAAA[n] != nil || z.CNAME[n] != "" || z.TXT[n] != nil ||
		z.PTR[n] != nil || z.TLSA[n] != nil
}

// answer fills m for question q; false means "do not answer at all".
func (z *Zone) answer(q dns.Question, m *dns.Msg) bool {
	z.mu.Lock()
	defer z.mu.Unlock()
	name := key(q.Name)
	z.queries[name+"/"+dns.TypeToString[q.Qtype]]++
	switch {
	case z.drop[name]:
		return false
	case z.servFail[name]:
		m.Rcode = dns.RcodeServerFailure
		return true
	case z.nxDomain[name] || !z.exists(name):
		m.Rcode = dns.RcodeNameError
		return true
	}
	hdr := func(n string, t uint16) dns.RR_Header {
		return dns.RR_Header{Name: dns.Fqdn(n), Rrtype: t, Class: dns.ClassINET, Ttl: z.TTL}
	}
	for hops := 0; hops < 8 && z.CNAME[name] != "" && q.Qtype != dns.TypeCNAME; hops++ {
		target := z.CNAME[name]
		m.Answer = append(m.Answer, &dns.CNAME{Hdr: hdr(name, dns.TypeCNAME), Target: dns.Fqdn(target)})
		name = target
	}
	switch q.Qtype {
	case dns.TypeMX:
		for _, r := range z.MX[name] {
			m.Answer = append(m.Answer, &dns.MX{Hdr: hdr(name, dns.TypeMX), Preference: r.Pref, Mx: dns.Fqdn(r.Host)})
		}
	case dns.TypeA:
		for _, ip := range z.A[name] {
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr(name, dns.TypeA), A: net.ParseIP(ip).To4()})
		}
	case dns.TypeAAAA:
		for _, ip := range z.AAAA[name] {
			m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr(name, dns.TypeAAAA), AAAA: net.ParseIP(ip)})
		}
	case dns.TypeCNAME:
		if t := z.CNAME[name]; t != "" {
			m.Answer = append(m.Answer, &dns.CNAME{Hdr: hdr(name, dns.TypeCNAME), Target: dns.Fqdn(t)})
		}
	case dns.TypeTXT:
		for _, strs := range z.TXT[name] {
			m.Answer = append(m.Answer, &dns.TXT{Hdr: hdr(name, dns.TypeTXT), Txt: strs})
		}
	case dns.TypePTR:
		for _, p := range z.PTR[name] {
			m.Answer = append(m.Answer, &dns.PTR{Hdr: hdr(name, dns.TypePTR), Ptr: dns.Fqdn(p)})
		}
	case dns.TypeTLSA:
		for _, r := range z.TLSA[name] {
			c := *r
			c.Hdr = hdr(name, dns.TypeTLSA)
			m.Answer = append(m.Answer, &c)
		}
	}
	z.setAD(q.Name, m)
	return true
}

func (z *Zone) truncated(name string) bool {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.truncate[key(name)]
}

// ServeDNS implements dns.Handler.
func (z *Zone) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	if len(r.Question) != 1 || !z.answer(r.Question[0], m) {
		return
	}
	m.AuthenticatedData = m.AuthenticatedData && askedAD(r)
	if _, tcp := w.RemoteAddr().(*net.TCPAddr); !tcp && z.truncated(r.Question[0].Name) {
		m.Truncated, m.Answer = true, nil
	}
	truncateUDP(w, r, m)
	_ = w.WriteMsg(m)
}

// FakeDNS serves zone over UDP and TCP on one random 127.0.0.1 port and
// returns its "ip:port". The servers stop at test end.
func FakeDNS(t testing.TB, zone *Zone) string {
	t.Helper()
	pc, ln, err := listenDNS()
	if err != nil {
		t.Fatalf("fake dns: %v", err)
	}
	addr := pc.LocalAddr().String()
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: zone}, {Listener: ln, Handler: zone}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go func() { _ = srv.ActivateAndServe() }()
		select {
		case <-started:
		case <-time.After(10 * time.Second):
			t.Fatal("fake dns did not start")
		}
		t.Cleanup(func() { _ = srv.Shutdown() })
	}
	return addr
}

// ServeZone serves a new zone holding the records of zoneLines (see
// AddLine) with FakeDNS and returns the zone and the server's "ip:port".
func ServeZone(t testing.TB, zoneLines ...string) (*Zone, string) {
	t.Helper()
	z := NewZone()
	for _, l := range zoneLines {
		z.AddLine(t, l)
	}
	return z, FakeDNS(t, z)
}

// listenDNS binds UDP and TCP on one random 127.0.0.1 port, retrying when
// the TCP side of the UDP port is taken.
func listenDNS() (net.PacketConn, net.Listener, error) {
	var lastErr error
	for i := 0; i < 50; i++ {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, nil, err
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		lastErr = err
	}
	return nil, nil, lastErr
}
