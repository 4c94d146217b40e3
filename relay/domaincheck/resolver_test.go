package domaincheck

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/relay/dnsclient"
	"github.com/jetrelay/jetrelay/relay/relaytest"
)

// resolverFor serves zone and returns a Resolver over it with budget.
func resolverFor(t *testing.T, zone *relaytest.Zone, budget int) Resolver {
	t.Helper()
	addr := relaytest.FakeDNS(t, zone)
	c, err := dnsclient.New(dnsclient.Options{Servers: []string{addr}, Timeout: 2 * time.Second, LoopbackOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	return NewResolver(c, budget)
}

// dnsErr asserts err is a *net.DNSError with the given kind.
func dnsErr(t *testing.T, err error, wantNotFound, wantTemporary bool) {
	t.Helper()
	var de *net.DNSError
	if !errors.As(err, &de) || de.IsNotFound != wantNotFound || de.IsTemporary != wantTemporary {
		t.Fatalf("err %#v, want DNSError notfound=%v temporary=%v", err, wantNotFound, wantTemporary)
	}
}

func TestResolverAnswersAndErrors(t *testing.T) {
	t.Parallel()
	z := relaytest.NewZone()
	long := "v=DKIM1; p=" + strings.Repeat("A", 600)
	z.AddTXTRecords("t.test", long, "second")
	z.AddTXTRecords("huge.test", strings.Repeat("x", MaxTXTBytes+1))
	z.AddMX("null.test", 0, ".")
	z.AddA("h.test", "192.0.2.1", "2001:db8::1")
	z.AddPTR("2001:db8::1", "h.test")
	z.AddA("nomx.test", "192.0.2.2")
	z.SetServFail("broken.test", true)
	for i := 0; i < MaxRecords+5; i++ {
		z.AddTXTRecords("many.test", strings.Repeat("m", i+1))
	}
	r := resolverFor(t, z, 0)
	ctx := context.Background()
	txts, err := r.LookupTXT(ctx, "t.test")
	if err != nil || len(txts) != 2 || txts[0] != long || txts[1] != "second" {
		t.Fatalf("TXT: %d %v", len(txts), err)
	}
	if txts, err := r.LookupTXT(ctx, "many.test"); len(txts) != MaxRecords {
		t.Fatalf("many: %d records (%v), want the cap %d", len(txts), err, MaxRecords)
	}
	_, err = r.LookupTXT(ctx, "huge.test")
	dnsErr(t, err, false, false)
	_, err = r.LookupTXT(ctx, "nxdomain.test")
	dnsErr(t, err, true, false)
	_, err = r.LookupTXT(ctx, "nomx.test") // exists, no TXT
	dnsErr(t, err, true, false)
	_, err = r.LookupTXT(ctx, "broken.test")
	dnsErr(t, err, false, true)
	if mxs, err := r.LookupMX(ctx, "null.test"); err != nil || len(mxs) != 1 || mxs[0].Host != "." {
		t.Fatalf("null MX: %v %v", mxs, err)
	}
	if ips, err := r.LookupIPAddr(ctx, "h.test"); err != nil || len(ips) != 2 {
		t.Fatalf("h.test: %v %v", ips, err)
	}
	if names, err := r.LookupAddr(ctx, "2001:db8::1"); err != nil || len(names) != 1 || names[0] != "h.test." {
		t.Fatalf("PTR: %v %v", names, err)
	}
	_, err = r.LookupAddr(ctx, "192.0.2.9")
	dnsErr(t, err, true, false)
	_, err = r.LookupIPAddr(ctx, "broken.test")
	dnsErr(t, err, false, true)
}

// The query budget stops a check whose records fan out; the queries end
// there, and the report says the lookups failed.
func TestResolverBudget(t *testing.T) {
	t.Parallel()
	z := relaytest.NewZone()
	z.AddTXTRecords("b.test", "x")
	r := resolverFor(t, z, 2)
	for i := 0; i < 2; i++ {
		if _, err := r.LookupTXT(context.Background(), "b.test"); err != nil {
			t.Fatal(err)
		}
	}
	_, err := r.LookupTXT(context.Background(), "b.test")
	dnsErr(t, err, false, true)
	if !strings.Contains(err.Error(), "budget") || z.Queries("b.test", 16) != 2 {
		t.Fatalf("err %v after %d queries", err, z.Queries("b.test", 16))
	}
}

// A name server that never answers: the checks end (each query has its
// timeout) and every line that needed it fails rather than passes.
func TestCheckUnansweredDNS(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.zone.SetServFail(domain, true)
	f.zone.SetDrop("_dmarc."+domain, true)
	f.zone.SetDrop("_dmarc.shop.test", true)
	r := f.check(t)
	want(t, r, CheckSPF, domain, Fail, "lookup failed", "name servers")
	want(t, r, CheckDMARC, "_dmarc."+domain, Fail, "lookup failed", "name servers")
	want(t, r, CheckBounceMX, domain, Fail, "lookup failed", "name servers")
}
