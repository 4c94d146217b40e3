package domaincheck

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/jetrelay/jetrelay/dkim"
)

// A domain set up right gets OK on every line, and every check ran.
func TestCheckGoodDomain(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	r := f.check(t)
	for _, fd := range r.Findings {
		if fd.Status != OK {
			t.Errorf("not OK: %+v", fd)
		}
	}
	if r.Failed() {
		t.Fatal("Failed() on a good domain")
	}
	for _, c := range []string{CheckSPF, CheckDKIM, CheckDMARC, CheckDKIMAlignment, CheckSPFAlignment,
		CheckEHLOForward, CheckEHLOReverse, CheckBounceMX} {
		if len(find(r, c, "")) == 0 {
			t.Errorf("no %s finding:\n%s", c, dump(r))
		}
	}
	want(t, r, CheckSPF, domain+" for "+relayIP, OK, "authorises "+relayIP, "")
	want(t, r, CheckDKIM, "s1._domainkey."+domain, OK, "matches the rsa-2048 key", "")
	want(t, r, CheckEHLOReverse, relayIP, OK, "PTR "+hostname, "")
	want(t, r, CheckBounceMX, domain, OK, "MX 10 mx."+domain, "")
}

// Broken SPF records: each is a FAIL naming the cause and the fix.
func TestCheckBrokenSPF(t *testing.T) {
	t.Parallel()
	var inc []string // 11 includes: one DNS-querying term too many
	for i := 1; i <= 11; i++ {
		inc = append(inc, fmt.Sprintf("include:i%d.shop.test", i))
	}
	cases := []struct {
		name    string
		records []string
		subject string // the finding to look at
		st      Status
		detail  string
		fix     string
	}{
		{name: "address not included", records: []string{"v=spf1 ip4:198.51.100.7 ~all"},
			subject: domain + " for " + relayIP, st: Fail, detail: "does not authorise " + relayIP + " (softfail)",
			fix: `"v=spf1 ip4:203.0.113.5 ip4:198.51.100.7 ~all"`},
		{name: "syntax error after the match", records: []string{"v=spf1 ip4:" + relayIP + " bogus:x -all"},
			subject: domain, st: Fail, detail: "permerror", fix: "syntax"},
		{name: "bad ip4", records: []string{"v=spf1 ip4:300.1.1.1 -all"},
			subject: domain + " for " + relayIP, st: Fail, detail: "permerror", fix: "syntax"},
		{name: "too many lookups", records: []string{"v=spf1 " + strings.Join(inc, " ") + " ip4:" + relayIP + " -all"},
			subject: domain, st: Fail, detail: "more than 10 DNS-querying terms", fix: "flatten"},
		{name: "too many void lookups", records: []string{"v=spf1 a:v1.shop.test a:v2.shop.test a:v3.shop.test -all"},
			subject: domain, st: Fail, detail: "void lookups", fix: "remove the terms"},
		{name: "no record", records: []string{"some=thing"}, subject: domain, st: Fail, detail: "no SPF record",
			fix: `publish shop.test. IN TXT "v=spf1 ip4:203.0.113.5 -all"`},
		{name: "two records", records: []string{goodSPF, "v=spf1 -all"}, subject: domain, st: Fail,
			detail: "2 SPF records", fix: "merge"},
		{name: "+all", records: []string{"v=spf1 +all"}, subject: domain, st: Warn, detail: "every address",
			fix: "-all"},
		{name: "?all", records: []string{"v=spf1 ip4:" + relayIP + " ?all"}, subject: domain, st: Warn,
			detail: "neutral", fix: "-all"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			f.zone.SetTXTRecords(domain, tc.records...)
			for i := 1; i <= 11; i++ {
				f.zone.AddTXTRecords(fmt.Sprintf("i%d.shop.test", i), "v=spf1 ip4:192.0.2.200 -all")
			}
			r := f.check(t)
			want(t, r, CheckSPF, tc.subject, tc.st, tc.detail, tc.fix)
			if r.Failed() != (tc.st == Fail) {
				t.Fatalf("Failed()=%v for %s:\n%s", r.Failed(), tc.st, dump(r))
			}
		})
	}
}

// The EHLO name's SPF (the identity of the relay's DSNs): missing is a
// warning, present and not authorising the relay a failure.
func TestCheckEHLOSPF(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	delete(f.zone.TXT, hostname)
	r := f.check(t)
	want(t, r, CheckSPF, hostname, Warn, "no SPF record", `"v=spf1 ip4:203.0.113.5 -all"`)
	if r.Failed() {
		t.Fatalf("a missing EHLO SPF record fails:\n%s", dump(r))
	}
	f = newFixture(t)
	f.zone.SetTXTRecords(hostname, "v=spf1 ip4:198.51.100.1 -all")
	r = f.check(t)
	want(t, r, CheckSPF, hostname+" for "+relayIP, Fail, "does not authorise", "ip4:"+relayIP)
}

// With VERP, the VERP domain's SPF is checked too, and its MX is where
// bounces must go.
func TestCheckVERPDomain(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.opts.VERPDomain = "bounce.shop.test"
	f.zone.AddTXTRecords("bounce.shop.test", "v=spf1 ip4:198.51.100.9 -all")
	f.zone.AddMX("bounce.shop.test", 0, ".")
	f.zone.SetTXTRecords(domain, "v=spf1 include:_spf.mailbox.example -all") // not this relay
	r := f.check(t)
	want(t, r, CheckSPF, "bounce.shop.test for "+relayIP, Fail, "does not authorise", "ip4:"+relayIP)
	want(t, r, CheckSPF, domain, Warn, "with VERP the envelope is in bounce.shop.test", "")
	want(t, r, CheckSPFAlignment, domain, OK, "relaxed", "")
	want(t, r, CheckBounceMX, "bounce.shop.test", Fail, "null MX", "bounces.listen")
}

// DKIM: a record of another key, no record, a published-only key
// missing, no key at all.
func TestCheckDKIM(t *testing.T) {
	t.Parallel()
	t.Run("mismatch", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t)
		f.zone.SetTXTRecords("s1._domainkey."+domain, txtRecord(t, writeKey(t, dkim.Ed25519, 0)))
		r := f.check(t)
		want(t, r, CheckDKIM, "s1._domainkey."+domain, Fail, "does not match", "replace the record by s1._domainkey")
	})
	t.Run("missing", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t)
		delete(f.zone.TXT, "s1._domainkey."+domain)
		r := f.check(t)
		want(t, r, CheckDKIM, "s1._domainkey."+domain, Fail, "no record", "publish s1._domainkey.shop.test. IN TXT")
	})
	t.Run("published-only key missing", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t)
		f.opts.Keys = append(f.opts.Keys, dkim.KeySpec{Domain: domain, Selector: "next", KeyFile: writeKey(t,
			dkim.Ed25519, 0)})
		r := f.check(t)
		want(t, r, CheckDKIM, "next._domainkey."+domain, Warn, "sign: false", "publish")
		if r.Failed() {
			t.Fatalf("a published-only key fails the check:\n%s", dump(r))
		}
	})
	t.Run("no key", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t)
		f.opts.Keys = nil
		r := f.check(t)
		want(t, r, CheckDKIM, domain, Fail, "unsigned", "jetrelay dkim keygen --domain shop.test")
		want(t, r, CheckDKIMAlignment, domain, Warn, "no DKIM key", "dkim.keys")
	})
}

// DMARC: missing, p=none, invalid, and alignment relaxed and strict.
func TestCheckDMARC(t *testing.T) {
	t.Parallel()
	t.Run("missing", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t)
		delete(f.zone.TXT, "_dmarc."+domain)
		r := f.check(t)
		want(t, r, CheckDMARC, "_dmarc."+domain, Fail, "no DMARC record", `"v=DMARC1; p=none;`)
	})
	t.Run("p=none", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t)
		f.zone.SetTXTRecords("_dmarc."+domain, "v=DMARC1; p=none; pct=50")
		r := f.check(t)
		want(t, r, CheckDMARC, "_dmarc."+domain, Warn, "monitoring only", "p=quarantine")
		want(t, r, CheckDMARC, "_dmarc."+domain, Warn, "pct=50", "")
		if r.Failed() {
			t.Fatalf("p=none fails:\n%s", dump(r))
		}
	})
	t.Run("unusable", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t)
		f.zone.SetTXTRecords("_dmarc."+domain, "v=DMARC1; p=sometimes")
		r := f.check(t)
		want(t, r, CheckDMARC, "_dmarc."+domain, Fail, "unusable record", "")
	})
	t.Run("envelope misaligned", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t)
		f.opts.VERPDomain = "bounces.relay.example"
		f.zone.AddTXTRecords("bounces.relay.example", "v=spf1 ip4:"+relayIP+" -all")
		f.zone.AddMX("bounces.relay.example", 10, "mx.shop.test")
		r := f.check(t)
		want(t, r, CheckSPFAlignment, domain, Warn, "not aligned: organizational domain relay.example", "verp_domain")
		want(t, r, CheckDKIMAlignment, domain, OK, "aligned (same domain)", "")
	})
	t.Run("strict, subdomain, org record", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t)
		f.zone.SetTXTRecords("_dmarc."+domain, "v=DMARC1; p=none; sp=reject; adkim=s; aspf=s")
		f.zone.AddTXTRecords("news.shop.test", "v=spf1 ip4:"+relayIP+" -all")
		f.zone.AddMX("news.shop.test", 10, "mx.shop.test")
		f.opts.Domain = "news.shop.test"
		f.opts.VERPDomain = "bounce.shop.test"
		f.opts.ParentDomains = true
		r := f.check(t)
		want(t, r, CheckDMARC, "_dmarc."+domain, OK, "p=reject adkim=s aspf=s", "")
		want(t, r, CheckDKIMAlignment, "news.shop.test", Fail, "strict alignment wants exactly news.shop.test",
			"adkim=r")
		want(t, r, CheckSPFAlignment, "news.shop.test", Fail, "strict", "aspf=r")
	})
}

// Reverse and forward DNS of the EHLO name.
func TestCheckEHLO(t *testing.T) {
	t.Parallel()
	t.Run("no PTR", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t)
		f.zone.PTR = map[string][]string{}
		r := f.check(t)
		want(t, r, CheckEHLOReverse, relayIP, Fail, "no PTR record", "set its PTR record to mail.shop.test")
	})
	t.Run("PTR elsewhere", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t)
		f.zone.PTR = map[string][]string{}
		f.zone.AddPTR(relayIP, "203-0-113-5.cloud.example")
		r := f.check(t)
		want(t, r, CheckEHLOReverse, relayIP, Fail, "PTR 203-0-113-5.cloud.example, not the EHLO name", "PTR")
	})
	t.Run("hostname elsewhere", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t)
		f.zone.A[hostname] = []string{"198.51.100.80"}
		r := f.check(t)
		want(t, r, CheckEHLOForward, hostname, Fail, "does not resolve to the outbound address", "IN A "+relayIP)
	})
	t.Run("not a FQDN", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t)
		f.opts.Hostname = "vm"
		r := f.check(t)
		want(t, r, CheckEHLOForward, "vm", Fail, "not a fully qualified", "hostname")
	})
	t.Run("no address given", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t)
		f.opts.IPs = nil
		r := f.check(t)
		want(t, r, CheckOutboundAddress, "-", Warn, "not known", "--ip")
		want(t, r, CheckEHLOReverse, relayIP, OK, "PTR", "") // the EHLO name's address stands in
		if len(find(r, CheckSPF, domain+" for "+relayIP)) != 0 {
			t.Fatalf("SPF checked an address nobody named:\n%s", dump(r))
		}
	})
	t.Run("private address", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t)
		f.opts.IPs = []netip.Addr{netip.MustParseAddr("10.0.0.5")}
		f.opts.IPSource = "delivery.source_ip"
		r := f.check(t)
		want(t, r, CheckOutboundAddress, "10.0.0.5", Warn, "not a public address (delivery.source_ip)", "--ip")
	})
}

// Bounce MX: none with an address is a warning, none at all a failure.
func TestCheckBounceMX(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	delete(f.zone.MX, domain)
	r := f.check(t)
	want(t, r, CheckBounceMX, domain, Fail, "no MX and no address", "IN MX")
	f.zone.AddA(domain, "203.0.113.30")
	r = f.check(t)
	want(t, r, CheckBounceMX, domain, Warn, "implicit MX", "IN MX")
}
