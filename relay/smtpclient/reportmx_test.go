package smtpclient_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jetrelay/jetrelay/relay/smtpclient"
)

// ReportMX (RFC 8460 §3): opportunistic STARTTLS whatever the domain's
// configured policy, the same MX hosts, and a destination key of its own
// so its unverified sessions never serve the domain's protected mail.
func TestReportMXIgnoresPolicy(t *testing.T) {
	z := &zone{mx: map[string][]smtpclient.MX{"bank.test": {{Host: "mx.bank.test", Pref: 10}}},
		a: map[string][]string{"mx.bank.test": {"127.0.0.1"}}}
	c := newClient(t, z, 25, func(o *smtpclient.Options) {
		o.Policies = smtpclient.StaticPolicies{Domains: map[string]smtpclient.TLSPolicy{"bank.test": smtpclient.PolicyVerify}}
	})
	ctx := context.Background()
	normal, err := c.MX(ctx, "bank.test", false)
	if err != nil {
		t.Fatal(err)
	}
	report := c.ReportMX("bank.test")
	if p := report.Plan(); p.PolicyName() != "opportunistic" || !p.PlainFallback || p.Verify || p.RequireTLS {
		t.Fatalf("report plan %+v", p)
	}
	if normal.Plan().PolicyName() != "configured" || !normal.Plan().Verify {
		t.Fatalf("normal plan %+v", normal.Plan())
	}
	if rk, nk := c.Destination(ctx, report), c.Destination(ctx, normal); rk == nk || !strings.HasSuffix(rk, "|tlsrpt") {
		t.Fatalf("destination keys %q and %q must differ", rk, nk)
	}
	hosts, err := report.Hosts(ctx)
	if err != nil || len(hosts) != 1 || hosts[0].Name != "mx.bank.test" || hosts[0].Port != 25 {
		t.Fatalf("hosts %+v %v", hosts, err)
	}
}
