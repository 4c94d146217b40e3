package submit

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/relaytest"
	"github.com/miekg/dns"
	"github.com/rs/zerolog"
)

// domainZone is the fake DNS of the recipient domain tests.
func domainZone(t *testing.T) (*relaytest.Zone, string) {
	t.Helper()
	z := relaytest.NewZone()
	z.AddMX("good.test", 10, "mx.good.test")
	z.AddMX("cname-mx.test", 10, "mx.good.test")
	z.AddA("implicit.test", "192.0.2.1")
	z.AddA("implicit6.test", "2001:db8::1")
	z.AddMX("null.test", 0, ".")
	z.AddTXT("noaddr.test", "v=spf1 -all")
	z.AddMX("xn--bcher-kva.test", 10, "mx.good.test")
	z.AddMX("broken.test", 10, "mx.good.test")
	z.SetServFail("broken.test", true)
	z.AddMX("slow.test", 10, "mx.good.test")
	z.SetDrop("slow.test", true)
	return z, relaytest.FakeDNS(t, z)
}

// TestRcptDomainCheck (issue 18, point 6): with bounces.verify_domains, a
// null MX is refused 556 5.1.10, NXDOMAIN and a domain without MX and
// address 550 5.1.2, each logged as a rejection; MX, implicit MX (A or
// AAAA), an IDN by its A-labels, SERVFAIL, a timeout and a routed domain
// are accepted, and the message goes to exactly the accepted recipients.
// A verdict is cached; with the check off nothing is looked up.
func TestRcptDomainCheck(t *testing.T) {
	t.Parallel()
	z, dnsAddr := domainZone(t)
	cfg := testConfig(t, func(c *config.Config) {
		c.Bounces.VerifyDomains = true
		c.Delivery.DNS.Servers = []string{dnsAddr}
		c.Delivery.DNS.Timeout = config.Duration(time.Second)
		c.Delivery.Routes = []config.Route{{Domains: []string{"routed.test"}, Host: "127.0.0.1:2525", TLS: "none"}}
	})
	h := start(t, cfg)
	c := h.login(lnImplicit, anyUser, anyPass)
	c.expect("MAIL FROM:<a@example.com> SMTPUTF8", 250, "")
	refused := []struct {
		rcpt string
		code int
		enh  string
	}{
		{"x@null.test", 556, "5.1.10"},
		{"x@nx.test", 550, "5.1.2"},
		{"y@NX.test", 550, "5.1.2"}, // cached
		{"x@noaddr.test", 550, "5.1.2"},
	}
	for _, r := range refused {
		c.expect("RCPT TO:<"+r.rcpt+">", r.code, r.enh)
	}
	accepted := []string{"good.test", "cname-mx.test", "implicit.test", "implicit6.test", "bücher.test",
		"broken.test", "slow.test", "routed.test"}
	for _, d := range accepted {
		c.expect("RCPT TO:<x@"+d+">", 250, "")
	}
	c.expect("DATA", 354, "")
	c.send(message("a@example.com", "") + ".\r\n")
	if r := c.read(); r.Code != 250 {
		t.Fatalf("end of DATA: %v", r)
	}
	entries := h.lease(len(accepted))
	var doms []string
	for _, e := range entries {
		doms = append(doms, e.Env.Domain)
	}
	if len(doms) != len(accepted) {
		t.Fatalf("queued for %v, want %v", doms, accepted)
	}
	if n := z.Queries("nx.test", dns.TypeMX); n != 1 {
		t.Errorf("nx.test MX asked %d times, want 1 (cached)", n)
	}
	if n := z.Queries("routed.test", dns.TypeMX); n != 0 {
		t.Errorf("routed.test looked up %d times", n)
	}
	rej := h.logs.events("rejected")
	if len(rej) != len(refused) {
		t.Fatalf("%d rejected events, want %d: %v", len(rej), len(refused), rej)
	}
	for i, r := range refused {
		if rej[i]["rcpt"] != r.rcpt || rej[i]["smtp_code"] != float64(r.code) || rej[i]["smtp_enh"] != r.enh {
			t.Errorf("rejected event %d: %v, want %s %d %s", i, rej[i], r.rcpt, r.code, r.enh)
		}
	}
	if !strings.Contains(h.logs.String(), `"event":"rcpt_domain_unverified"`) {
		t.Error("no rcpt_domain_unverified line for the failed lookups")
	}

	off := start(t, testConfig(t, func(c *config.Config) { c.Delivery.DNS.Servers = []string{dnsAddr} }))
	co := off.login(lnImplicit, anyUser, anyPass)
	co.expect("MAIL FROM:<a@example.com>", 250, "")
	co.expect("RCPT TO:<x@nx-off.test>", 250, "")
	if n := z.Queries("nx-off.test", dns.TypeMX); n != 0 {
		t.Errorf("verify_domains off: nx-off.test looked up %d times", n)
	}
	off.cfg.Bounces.VerifyDomains = true // a reload turns it on
	reload(t, off.srv, off.cfg)
	co.expect("RCPT TO:<x@nx-off.test>", 550, "5.1.2")
}

// TestRcptDomainCacheAndPause: verdicts expire (refused ones sooner than
// accepted ones), a timeout skips every lookup for a while, and the cache
// stays bounded.
func TestRcptDomainCacheAndPause(t *testing.T) {
	t.Parallel()
	z, dnsAddr := domainZone(t)
	v, err := newDomainVerifier(domainVerifierOptions{Log: zerolog.Nop(), Settings: Settings{VerifyDomains: true,
		DNS: config.DNS{Servers: []string{dnsAddr}, Timeout: config.Duration(time.Second)}}})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	v.now = func() time.Time { return now }
	ask := func(d string) int {
		t.Helper()
		if r := v.check(d, nopObserver{}); r != nil {
			return r.Code
		}
		return 250
	}
	if ask("nx.test") != 550 || ask("good.test") != 250 {
		t.Fatal("first verdicts")
	}
	now = now.Add(rcptDomainBad + time.Second)
	ask("nx.test")
	ask("good.test")
	if n, m := z.Queries("nx.test", dns.TypeMX), z.Queries("good.test", dns.TypeMX); n != 2 || m != 1 {
		t.Fatalf("after %v: nx.test asked %d times (want 2), good.test %d (want 1)", rcptDomainBad, n, m)
	}
	if ask("slow.test") != 250 {
		t.Fatal("a timeout must accept")
	}
	if ask("nx2.test") != 250 || z.Queries("nx2.test", dns.TypeMX) != 0 {
		t.Fatal("after a timeout the lookups must pause")
	}
	now = now.Add(rcptDomainPause + time.Second)
	if ask("nx2.test") != 550 {
		t.Fatal("after the pause the lookups must resume")
	}
	v.mu.Lock()
	for i := range rcptDomainEntries + 10 {
		v.store(fmt.Sprintf("d%d.test", i), domainVerdict{until: now.Add(time.Hour)})
	}
	n := len(v.cache)
	v.mu.Unlock()
	if n > rcptDomainEntries {
		t.Fatalf("cache holds %d entries, limit %d", n, rcptDomainEntries)
	}
}
