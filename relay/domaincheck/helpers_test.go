package domaincheck

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/dkim"
	"github.com/jetrelay/jetrelay/relay/dnsclient"
	"github.com/jetrelay/jetrelay/relay/relaytest"
)

// The good setup: shop.test sends through a relay at 203.0.113.5 named
// mail.shop.test (with an SPF record of its own for DSNs), signs with selector s1 (RSA 2048, a record longer than
// one character-string) and has p=reject.
const (
	domain   = "shop.test"
	hostname = "mail.shop.test"
	relayIP  = "203.0.113.5"
	goodSPF  = "v=spf1 mx ip4:" + relayIP + " -all"
	goodMARC = "v=DMARC1; p=reject; rua=mailto:dmarc@shop.test"
)

// fixture is a fake zone, a key and the options for Check.
type fixture struct {
	zone *relaytest.Zone
	dns  string
	key  string // the key file of s1._domainkey.shop.test
	opts Options
}

// newFixture builds the good zone and returns options that check it; the
// zone is served from the first check on (change it before through its
// fields, after only through its methods).
func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{zone: relaytest.NewZone()}
	f.key = writeKey(t, dkim.RSA, 2048)
	f.zone.AddTXTRecords(domain, goodSPF, "google-site-verification=abc")
	f.zone.AddTXTRecords("s1._domainkey."+domain, txtRecord(t, f.key))
	f.zone.AddTXTRecords("_dmarc."+domain, goodMARC)
	f.zone.AddA(hostname, relayIP)
	f.zone.AddTXTRecords(hostname, "v=spf1 a -all")
	f.zone.AddPTR(relayIP, hostname)
	f.zone.AddMX(domain, 10, "mx."+domain)
	f.zone.AddA("mx."+domain, "203.0.113.25")
	f.opts = Options{Domain: domain, Hostname: hostname, IPs: []netip.Addr{netip.MustParseAddr(relayIP)},
		IPSource: "--ip", Keys: []dkim.KeySpec{{Domain: domain, Selector: "s1", KeyFile: f.key, Sign: true}}}
	return f
}

// check runs Check against the fixture's fake DNS with a fresh resolver.
func (f *fixture) check(t *testing.T) *Report {
	t.Helper()
	if f.dns == "" {
		f.dns = relaytest.FakeDNS(t, f.zone)
	}
	c, err := dnsclient.New(dnsclient.Options{Servers: []string{f.dns}, Timeout: 5 * time.Second, LoopbackOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	o := f.opts
	o.Resolver = NewResolver(c, 0)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return Check(ctx, o)
}

// writeKey generates a key into a temp file (mode 0600).
func writeKey(t *testing.T, algo dkim.Algorithm, bits int) string {
	t.Helper()
	k, err := dkim.GenerateKey(algo, bits)
	if err != nil {
		t.Fatal(err)
	}
	pem, err := dkim.MarshalKey(k)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(p, pem, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// txtRecord is the DKIM record of the key in file.
func txtRecord(t *testing.T, file string) string {
	t.Helper()
	k, err := dkim.LoadKey(file)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := dkim.TXTRecord(k)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// find returns the findings of check whose subject is subject ("" = any).
func find(r *Report, check, subject string) []Finding {
	var out []Finding
	for _, f := range r.Findings {
		if f.Check == check && (subject == "" || f.Subject == subject) {
			out = append(out, f)
		}
	}
	return out
}

// want asserts that exactly one finding of check/subject exists, with
// status st and a detail containing detail (and a fix containing fix).
func want(t *testing.T, r *Report, check, subject string, st Status, detail, fix string) {
	t.Helper()
	fs := find(r, check, subject)
	if len(fs) != 1 {
		t.Fatalf("%s %s: %d findings, want 1; report:\n%s", check, subject, len(fs), dump(r))
	}
	f := fs[0]
	if f.Status != st || !strings.Contains(f.Detail, detail) || !strings.Contains(f.Fix, fix) {
		t.Fatalf("%s %s: got %s %q fix %q, want %s with %q and fix %q", check, subject, f.Status, f.Detail, f.Fix,
			st, detail, fix)
	}
	if st != OK && f.Fix == "" {
		t.Fatalf("%s %s: %s without a fix", check, subject, st)
	}
}

// dump prints a report for a failure message.
func dump(r *Report) string {
	var b strings.Builder
	for _, f := range r.Findings {
		b.WriteString(string(f.Status) + " " + f.Check + " " + f.Subject + ": " + f.Detail + " | " + f.Fix + "\n")
	}
	return b.String()
}
