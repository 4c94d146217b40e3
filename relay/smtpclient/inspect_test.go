package smtpclient_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/relay/relaytest"
	"github.com/jetrelay/jetrelay/relay/smtpclient"
)

// Inspect answers from delivery's own steps: MX order, DNSSEC state, the
// TLSA lookups made, DANE for the secure host, an MTA-STS enforce policy
// that leaves out the host it does not name (DANE's stays); Probe makes
// one session per address under the host's plan and sends nothing.
func TestInspectAndProbe(t *testing.T) {
	t.Parallel()
	cert1 := relaytest.SelfSigned(t, "mx1.ins.test")
	cert2 := relaytest.SelfSigned(t, "mx2.ins.test")
	mx1 := relaytest.FakeMX(t, relaytest.StartTLS(&cert1))
	mx2 := relaytest.FakeMX(t, relaytest.StartTLS(&cert2), relaytest.Port(mx1.Port))
	z := relaytest.NewZone()
	z.AddMX("ins.test", 10, "mx1.ins.test")
	z.AddMX("ins.test", 20, "mx2.ins.test")
	z.AddA("mx1.ins.test", mx1.IP)
	z.AddA("mx2.ins.test", mx2.IP)
	z.SetSecure("ins.test", true)
	z.SetSecure("mx2.ins.test", false) // insecure addresses: no DANE (RFC 7672 §2.2.2)
	tlsa := fmt.Sprintf("_%d._tcp.mx1.ins.test", mx1.Port)
	z.AddTLSA(tlsa, 3, 1, 1, relaytest.SPKISHA256(cert1.Leaf))
	r, err := smtpclient.NewResolver(smtpclient.DNSOptions{Servers: []string{relaytest.FakeDNS(t, z)},
		Timeout: 2 * time.Second, LoopbackOnly: true, TrustAD: true})
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, smtpclient.NewCache(r), mx1.Port, func(o *smtpclient.Options) {
		o.DANE = true
		o.STS = stsFixed{p: smtpclient.STSPolicy{Mode: smtpclient.STSEnforce, MX: []string{"mx9.ins.test"}}}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	in, err := c.Inspect(ctx, "ins.test")
	if err != nil {
		t.Fatal(err)
	}
	if in.Err != nil || in.Policy != smtpclient.PolicyNameSTS || !in.MXSecure || in.Implicit || len(in.Hosts) != 2 {
		t.Fatalf("inspection %+v: want mta-sts, secure MX, two hosts, no error", in)
	}
	h1, h2 := in.Hosts[0], in.Hosts[1]
	if h1.MX.Host != "mx1.ins.test" || h1.Policy != smtpclient.PolicyDANE || h1.Excluded != "" || len(h1.Host.DANE) != 1 ||
		len(h1.TLSA) != 1 || h1.TLSA[0].Name != tlsa || !h1.TLSA[0].Secure || !h1.Addrs.Secure {
		t.Fatalf("mx1 %+v: want DANE with its TLSA lookup, kept", h1)
	}
	if h2.MX.Host != "mx2.ins.test" || h2.Policy != smtpclient.PolicyNameSTS || h2.Excluded == "" || len(h2.TLSA) != 0 ||
		h2.Addrs.Secure || !h2.Plan.Verify {
		t.Fatalf("mx2 %+v: want an mta-sts host left out by the policy, no TLSA lookup", h2)
	}
	p := c.Probe(ctx, h1, h1.Host.IPs[0])
	if !p.Met || p.Err != nil || !p.Verified || p.DANE != nil || len(p.Chain) != 1 || p.WebPKI == nil || !p.STARTTLS {
		t.Fatalf("probe mx1 %+v: want a DANE-verified session, WebPKI failing", p)
	}
	p = c.Probe(ctx, h2, h2.Host.IPs[0])
	if p.Met || p.TLSFailure != smtpclient.FailNotTrusted || len(p.Chain) != 1 || smtpclient.FailureOf(p.WebPKI) != smtpclient.FailNotTrusted {
		t.Fatalf("probe mx2 %+v: want the verify plan refused, the certificate shown", p)
	}
	if len(mx1.Messages())+len(mx2.Messages()) != 0 || mx2.Connections() != 2 {
		t.Fatalf("probes sent mail or mx2 saw %d connections (want the probe and one certificate capture)",
			mx2.Connections())
	}
}
