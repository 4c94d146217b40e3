package smtpclient_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/relay/relaytest"
	"github.com/jetrelay/jetrelay/relay/smtpclient"
)

// daneMX is one MX host of a DANE case: its certificate (nil: no STARTTLS)
// and the TLSA records published for it.
type daneMX struct {
	cert     *tls.Certificate
	tlsa     [][]byte // each: usage, selector, matching type, then data
	servFail bool     // the TLSA lookup answers SERVFAIL
}

type daneCase struct {
	domain   string
	insecure bool // the zone's answers carry no AD bit
	mxs      []daneMX
	// want: "dane:<n>" delivered by MX n under DANE, "tls:<n>" delivered
	// by MX n under the domain's ordinary (opportunistic) policy, or
	// "defer:<tls_failure>" 451 4.7.5 with nothing delivered.
	want string
}

func tlsaRec(usage, selector, matching uint8, data []byte) []byte {
	return append([]byte{usage, selector, matching}, data...)
}

// DANE (RFC 7672) over real DNS answers from a fake validating resolver:
// DANE-EE matches the leaf whatever its names and dates; DANE-TA needs the
// chain to a matching CA and a valid certificate for the MX name; a
// mismatch defers at that MX (4.7.5) and the next MX is tried; a failed
// TLSA lookup for a secure MX makes it unusable (§2.2); answers without
// AD and PKIX-only records (§3.1.3) leave the domain's policy as it was.
// Every deferral delivers nothing, so the queue keeps the mail; every
// delivery is received exactly once.
func TestDANE(t *testing.T) {
	t.Parallel()
	ca, other := relaytest.NewCA(t), relaytest.NewCA(t)
	self := func(host string) *tls.Certificate { c := relaytest.SelfSigned(t, host); return &c }
	spki := func(c *tls.Certificate) []byte { return relaytest.SPKISHA256(c.Leaf) }
	chain := func(host string) *tls.Certificate { c := ca.ChainCert(t, host); return &c }
	expired := ca.ExpiredCert(t, "mx1.ta-expired.test")
	eeExpired := ca.ExpiredCert(t, "mx1.ee-expired.test")
	eeSelf, eeOther, mx2Self := self("mx1.ee.test"), self("elsewhere.test"), self("mx2.ee-next.test")
	caTA := tlsaRec(2, 0, 1, relaytest.CertSHA256(ca.Certificate()))
	cases := []daneCase{
		{domain: "ee.test", mxs: []daneMX{{cert: eeSelf, tlsa: [][]byte{tlsaRec(3, 1, 1, spki(eeSelf))}}}, want: "dane:0"},
		{domain: "ee-expired.test", mxs: []daneMX{{cert: &eeExpired,
			tlsa: [][]byte{tlsaRec(3, 1, 1, spki(&eeExpired))}}}, want: "dane:0"},
		{domain: "ee-mismatch.test", mxs: []daneMX{{cert: eeSelf, tlsa: [][]byte{tlsaRec(3, 1, 1, spki(eeOther))}}},
			want: "defer:validation-failure"},
		{domain: "ee-next.test", mxs: []daneMX{{cert: eeSelf, tlsa: [][]byte{tlsaRec(3, 1, 1, spki(eeOther))}},
			{cert: mx2Self, tlsa: [][]byte{tlsaRec(3, 1, 1, spki(mx2Self))}}}, want: "dane:1"},
		{domain: "ta.test", mxs: []daneMX{{cert: chain("mx1.ta.test"), tlsa: [][]byte{caTA}}}, want: "dane:0"},
		{domain: "ta-mismatch.test", mxs: []daneMX{{cert: chain("mx1.ta-mismatch.test"),
			tlsa: [][]byte{tlsaRec(2, 0, 1, relaytest.CertSHA256(other.Certificate()))}}}, want: "defer:validation-failure"},
		{domain: "ta-name.test", mxs: []daneMX{{cert: chain("mx.elsewhere.test"), tlsa: [][]byte{caTA}}},
			want: "defer:certificate-host-mismatch"},
		{domain: "ta-expired.test", mxs: []daneMX{{cert: &expired, tlsa: [][]byte{caTA}}},
			want: "defer:certificate-expired"},
		{domain: "insecure.test", insecure: true, mxs: []daneMX{{cert: eeSelf,
			tlsa: [][]byte{tlsaRec(3, 1, 1, spki(eeOther))}}}, want: "tls:0"},
		{domain: "servfail.test", mxs: []daneMX{{cert: eeSelf, servFail: true}}, want: "defer:dnssec-invalid"},
		{domain: "servfail-next.test", mxs: []daneMX{{cert: eeSelf, servFail: true}, {cert: mx2Self}}, want: "tls:1"},
		{domain: "pkix.test", mxs: []daneMX{{cert: eeSelf, tlsa: [][]byte{tlsaRec(1, 1, 1, spki(eeOther)),
			tlsaRec(0, 0, 1, relaytest.CertSHA256(other.Certificate()))}}}, want: "tls:0"},
		{domain: "bad-digest.test", mxs: []daneMX{{cert: eeSelf, tlsa: [][]byte{tlsaRec(3, 1, 1, []byte{1, 2, 3})}}},
			want: "tls:0"},
		{domain: "addr-insecure.test", mxs: []daneMX{{cert: eeSelf, tlsa: [][]byte{tlsaRec(3, 1, 1, spki(eeOther))}}},
			want: "tls:0"},
		{domain: "nostarttls.test", mxs: []daneMX{{tlsa: [][]byte{tlsaRec(3, 1, 1, spki(eeSelf))}}},
			want: "defer:starttls-not-supported"},
	}
	z := relaytest.NewZone()
	servers := map[string][]*relaytest.MX{}
	port := 0
	for _, c := range cases {
		for i, m := range c.mxs {
			var opts []relaytest.Option
			if m.cert != nil {
				opts = append(opts, relaytest.StartTLS(m.cert))
			}
			if port != 0 {
				opts = append(opts, relaytest.Port(port))
			}
			srv := relaytest.FakeMX(t, opts...)
			port = srv.Port
			servers[c.domain] = append(servers[c.domain], srv)
			host := fmt.Sprintf("mx%d.%s", i+1, c.domain)
			z.AddMX(c.domain, uint16(10*(i+1)), host)
			z.AddA(host, srv.IP)
		}
		z.SetSecure(c.domain, !c.insecure)
	}
	for _, c := range cases {
		for i, m := range c.mxs {
			name := fmt.Sprintf("_%d._tcp.mx%d.%s", port, i+1, c.domain)
			for _, r := range m.tlsa {
				z.AddTLSA(name, r[0], r[1], r[2], r[3:])
			}
			z.SetServFail(name, m.servFail)
			if c.domain == "addr-insecure.test" { // secure MX and TLSA, insecure address (RFC 7672 §2.2.2)
				z.SetSecure("mx1."+c.domain, false)
				z.SetSecure(name, true)
			}
		}
	}
	client := newDANEClient(t, z, port, true)
	for _, c := range cases {
		t.Run(c.domain, func(t *testing.T) {
			t.Parallel()
			checkDANE(t, servers[c.domain], deliver(t, client, "x@"+c.domain), c)
		})
	}
}

// newDANEClient asks z's fake resolver, believing its AD bit when trustAD,
// with DANE on and no trusted roots (WebPKI verification always fails).
func newDANEClient(t *testing.T, z *relaytest.Zone, port int, trustAD bool) *smtpclient.Client {
	t.Helper()
	r, err := smtpclient.NewResolver(smtpclient.DNSOptions{Servers: []string{relaytest.FakeDNS(t, z)},
		Timeout: 2 * time.Second, LoopbackOnly: true, TrustAD: trustAD})
	if err != nil {
		t.Fatal(err)
	}
	return newClient(t, smtpclient.NewCache(r), port, func(o *smtpclient.Options) { o.DANE = true })
}

func checkDANE(t *testing.T, servers []*relaytest.MX, a smtpclient.Attempt, c daneCase) {
	t.Helper()
	rcpt := "x@" + c.domain
	kind, arg, _ := strings.Cut(c.want, ":")
	received := 0
	for _, s := range servers {
		received += s.Received(rcpt)
	}
	if kind == "defer" {
		if len(a.Replies) != 1 || a.Replies[0].Code != 451 || a.Replies[0].Enh != "4.7.5" || !a.Replies[0].Temporary() {
			t.Fatalf("replies %+v, want 451 4.7.5 (the queue keeps the mail)", a.Replies)
		}
		if received != 0 || a.Conn.TLSFailure != arg || a.Conn.TLSPolicy != smtpclient.PolicyDANE {
			t.Fatalf("received %d, conn %+v, want nothing sent, tls_policy dane, tls_failure %s", received, a.Conn, arg)
		}
		return
	}
	wantReply(t, a, 250, "2.0.0")
	var n int
	fmt.Sscan(arg, &n)
	if received != 1 || servers[n].Received(rcpt) != 1 || !strings.HasPrefix(a.Conn.TLS, "TLS1.") {
		t.Fatalf("received %d (MX %d: %d), tls %q: want once by MX %d over TLS", received, n,
			servers[n].Received(rcpt), a.Conn.TLS, n)
	}
	wantPolicy, wantVerified := string(smtpclient.PolicyOpportunistic), false
	if kind == "dane" {
		wantPolicy, wantVerified = smtpclient.PolicyDANE, true
	}
	if a.Conn.TLSPolicy != wantPolicy || a.Conn.Verified != wantVerified || a.Conn.TLSFailure != "" {
		t.Fatalf("conn %+v, want tls_policy %s, tls_verified %v", a.Conn, wantPolicy, wantVerified)
	}
}

// With dnssec off (no TrustAD) the AD bit is neither asked for nor
// believed: a secure zone with mismatching TLSA records delivers as today.
func TestDANENeedsTrustAD(t *testing.T) {
	t.Parallel()
	cert := relaytest.SelfSigned(t, "mx1.off.test")
	srv := relaytest.FakeMX(t, relaytest.StartTLS(&cert))
	z := relaytest.NewZone()
	z.AddMX("off.test", 10, "mx1.off.test")
	z.AddA("mx1.off.test", srv.IP)
	z.AddTLSA(fmt.Sprintf("_%d._tcp.mx1.off.test", srv.Port), 3, 0, 1, []byte(strings.Repeat("x", 32)))
	z.SetSecure("off.test", true)
	a := deliver(t, newDANEClient(t, z, srv.Port, false), "x@off.test")
	checkDANE(t, []*relaytest.MX{srv}, a, daneCase{domain: "off.test", want: "tls:0"})
	if z.Queries(fmt.Sprintf("_%d._tcp.mx1.off.test", srv.Port), 52) != 0 {
		t.Fatal("TLSA looked up without dnssec: trust_ad")
	}
}

// stsFixed is an STSSource with one policy for every domain.
type stsFixed struct{ p smtpclient.STSPolicy }

func (s stsFixed) Lookup(context.Context, string) smtpclient.STSResult {
	return smtpclient.STSResult{Policy: &s.p}
}

// DANE outranks MTA-STS (issue 17's policy order): an enforce policy that
// names no MX host, over a self-signed certificate no WebPKI trusts,
// defers the mail (4.7.5, nothing sent) — unless the MX host has usable
// TLSA records, which deliver it under tls_policy dane.
func TestDANEOutranksMTASTS(t *testing.T) {
	t.Parallel()
	cert := relaytest.SelfSigned(t, "mx1.sts.test")
	srv := relaytest.FakeMX(t, relaytest.StartTLS(&cert))
	z := relaytest.NewZone()
	for _, dom := range []string{"sts.test", "sts-dane.test"} {
		z.AddMX(dom, 10, "mx1."+dom)
		z.AddA("mx1."+dom, srv.IP)
		z.SetSecure(dom, true)
	}
	z.AddTLSA(fmt.Sprintf("_%d._tcp.mx1.sts-dane.test", srv.Port), 3, 1, 1, relaytest.SPKISHA256(cert.Leaf))
	r, err := smtpclient.NewResolver(smtpclient.DNSOptions{Servers: []string{relaytest.FakeDNS(t, z)},
		Timeout: 2 * time.Second, LoopbackOnly: true, TrustAD: true})
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, smtpclient.NewCache(r), srv.Port, func(o *smtpclient.Options) {
		o.DANE = true
		o.STS = stsFixed{p: smtpclient.STSPolicy{Mode: smtpclient.STSEnforce, MX: []string{"*.elsewhere.test"}}}
	})
	a := deliver(t, c, "x@sts.test")
	if len(a.Replies) != 1 || a.Replies[0].Enh != "4.7.5" || !a.Replies[0].Temporary() || srv.Received("x@sts.test") != 0 ||
		a.Conn.TLSPolicy != smtpclient.PolicyNameSTS {
		t.Fatalf("MTA-STS alone: replies %+v conn %+v received %d, want a 4.7.5 deferral under mta-sts",
			a.Replies, a.Conn, srv.Received("x@sts.test"))
	}
	a = deliver(t, c, "x@sts-dane.test")
	checkDANE(t, []*relaytest.MX{srv}, a, daneCase{domain: "sts-dane.test", want: "dane:0"})
}

// An MX host that is a secure CNAME: TLSA records at the expanded name are
// used first, then those at the MX name (RFC 7672 §2.2.2); a DANE-TA
// certificate may name either (§3.2.2).
func TestDANECNAMEBase(t *testing.T) {
	t.Parallel()
	ca := relaytest.NewCA(t)
	taCert := ca.ChainCert(t, "mx1.cname-ta.test") // the MX name, not the expanded one
	eeCert := relaytest.SelfSigned(t, "anything.test")
	other := relaytest.SelfSigned(t, "other.test")
	ta := relaytest.FakeMX(t, relaytest.StartTLS(&taCert))
	ee := relaytest.FakeMX(t, relaytest.StartTLS(&eeCert), relaytest.Port(ta.Port))
	z := relaytest.NewZone()
	tlsa := func(host string, u, s, m uint8, d []byte) {
		z.AddTLSA(fmt.Sprintf("_%d._tcp.%s", ta.Port, host), u, s, m, d)
	}
	for dom, ip := range map[string]string{"cname-ta.test": ta.IP, "cname-mx.test": ee.IP, "cname-first.test": ee.IP} {
		z.AddMX(dom, 10, "mx1."+dom)
		z.AddCNAME("mx1."+dom, "real."+dom)
		z.AddA("real."+dom, ip)
		z.SetSecure(dom, true)
	}
	tlsa("real.cname-ta.test", 2, 0, 1, relaytest.CertSHA256(ca.Certificate()))
	tlsa("mx1.cname-mx.test", 3, 1, 1, relaytest.SPKISHA256(eeCert.Leaf))    // only at the MX name
	tlsa("real.cname-first.test", 3, 1, 1, relaytest.SPKISHA256(other.Leaf)) // the expanded name wins:
	tlsa("mx1.cname-first.test", 3, 1, 1, relaytest.SPKISHA256(eeCert.Leaf)) // this one is not used
	c := newDANEClient(t, z, ta.Port, true)
	checkDANE(t, []*relaytest.MX{ta}, deliver(t, c, "x@cname-ta.test"), daneCase{domain: "cname-ta.test", want: "dane:0"})
	checkDANE(t, []*relaytest.MX{ee}, deliver(t, c, "x@cname-mx.test"), daneCase{domain: "cname-mx.test", want: "dane:0"})
	checkDANE(t, []*relaytest.MX{ee}, deliver(t, c, "x@cname-first.test"),
		daneCase{domain: "cname-first.test", want: "defer:validation-failure"})
}

// A REQUIRETLS message (RFC 8689 §4.2.1: the certificate checked by
// PKIX or DANE) goes to a DANE-verified server with a self-signed
// certificate; without the TLSA record the same server fails it 5.7.30.
func TestDANESatisfiesRequireTLS(t *testing.T) {
	t.Parallel()
	cert := relaytest.SelfSigned(t, "mx1.rtls.test")
	srv := relaytest.FakeMX(t, relaytest.StartTLS(&cert), relaytest.RequireTLS())
	z := relaytest.NewZone()
	for _, dom := range []string{"rtls.test", "rtls-plain.test"} {
		z.AddMX(dom, 10, "mx1."+dom)
		z.AddA("mx1."+dom, srv.IP)
		z.SetSecure(dom, true)
	}
	z.AddTLSA(fmt.Sprintf("_%d._tcp.mx1.rtls.test", srv.Port), 3, 1, 1, relaytest.SPKISHA256(cert.Leaf))
	c := newDANEClient(t, z, srv.Port, true)
	requireTLS := func(m *smtpclient.Message) { m.RequireTLS = true }
	a := deliver(t, c, "x@rtls.test", requireTLS)
	checkDANE(t, []*relaytest.MX{srv}, a, daneCase{domain: "rtls.test", want: "dane:0"})
	if msgs := srv.Messages(); len(msgs) != 1 || !msgs[0].MailOpts.RequireTLS {
		t.Fatal("REQUIRETLS not passed on")
	}
	a = deliver(t, c, "x@rtls-plain.test", requireTLS)
	if len(a.Replies) != 1 || a.Replies[0].Enh != "5.7.30" || srv.Received("x@rtls-plain.test") != 0 {
		t.Fatalf("without TLSA: replies %+v, want 5.7.30 and nothing sent", a.Replies)
	}
}

// A domain without MX records is its own implicit MX for DANE as for
// delivery (RFC 7672 §2.2.1): with a secure denial of MX records and
// secure addresses its TLSA records at _<port>._tcp.<domain> are used —
// or, for a domain that is a secure CNAME, those of the expanded name
// first; a mismatch or a failed TLSA lookup defers (4.7.5, nothing sent)
// and an insecure zone delivers as without DANE.
func TestDANEImplicitMX(t *testing.T) {
	t.Parallel()
	cert := relaytest.SelfSigned(t, "implicit.test")
	other := relaytest.SelfSigned(t, "other.test")
	srv := relaytest.FakeMX(t, relaytest.StartTLS(&cert))
	z := relaytest.NewZone()
	tlsa := func(name string, c *tls.Certificate) {
		z.AddTLSA(fmt.Sprintf("_%d._tcp.%s", srv.Port, name), 3, 1, 1, relaytest.SPKISHA256(c.Leaf))
	}
	for _, dom := range []string{"implicit.test", "implicit-bad.test", "implicit-insecure.test",
		"implicit-servfail.test", "real.implicit-cname.test"} {
		z.AddA(dom, srv.IP)
		z.SetSecure(dom, dom != "implicit-insecure.test")
	}
	z.AddCNAME("implicit-cname.test", "real.implicit-cname.test")
	z.SetSecure("implicit-cname.test", true)
	tlsa("implicit.test", &cert)
	tlsa("implicit-bad.test", &other)
	tlsa("implicit-insecure.test", &other)
	tlsa("real.implicit-cname.test", &cert)
	tlsa("implicit-cname.test", &other) // the expanded name's records win
	z.SetServFail(fmt.Sprintf("_%d._tcp.implicit-servfail.test", srv.Port), true)
	c := newDANEClient(t, z, srv.Port, true)
	for _, tc := range []daneCase{
		{domain: "implicit.test", want: "dane:0"},
		{domain: "implicit-cname.test", want: "dane:0"},
		{domain: "implicit-bad.test", want: "defer:validation-failure"},
		{domain: "implicit-servfail.test", want: "defer:dnssec-invalid"},
		{domain: "implicit-insecure.test", want: "tls:0"},
	} {
		checkDANE(t, []*relaytest.MX{srv}, deliver(t, c, "x@"+tc.domain), tc)
	}
	if n := z.Queries(fmt.Sprintf("_%d._tcp.implicit-insecure.test", srv.Port), 52); n != 0 {
		t.Fatalf("%d TLSA queries for an insecure implicit MX", n)
	}
}
