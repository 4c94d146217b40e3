package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/jetrelay/jetrelay/relay/mtasts"
	"github.com/jetrelay/jetrelay/relay/relaytest"
)

// tlsSetup is a fake DNS (with the AD bit), fake MX servers on one port,
// an MTA-STS policy server with a certificate from the test CA, and a
// config pointing at all of them (NATS unreachable unless a test says).
type tlsSetup struct {
	t      *testing.T
	zone   *relaytest.Zone
	ca     *relaytest.CA
	port   int // the MX port (delivery.port)
	sts    map[string]string
	stsIP  string
	config string
}

func newTLSSetup(t *testing.T, extraDelivery string) *tlsSetup {
	t.Helper()
	s := &tlsSetup{t: t, zone: relaytest.NewZone(), ca: relaytest.NewCA(t), sts: map[string]string{}}
	stsCert := s.ca.Cert(t, "*.good.test", "*.mismatch.test", "*.expired.test", "*.self.test", "*.nomatch.test",
		"*.testing.test", "*.dane.test")
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.Host)
		body, ok := s.sts[strings.TrimPrefix(host, "mta-sts.")]
		if !ok || r.URL.Path != "/.well-known/mta-sts.txt" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte(body))
	}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener, srv.TLS = ln, &tls.Config{Certificates: []tls.Certificate{stsCert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	s.stsIP = "127.0.0.1"
	httpsPort := ln.Addr().(*net.TCPAddr).Port
	s.port = relaytest.FakeMX(t).Port // reserves a port for every fake MX of this setup
	dns := relaytest.FakeDNS(t, s.zone)
	if !strings.Contains(extraDelivery, "allowed_networks") {
		extraDelivery += "  allowed_networks: [127.0.0.0/8]\n" // the fake servers are on loopback
	}
	cfg := fmt.Sprintf("hostname: relay.test\ndata_dir: %s\ndelivery:\n  port: %d\n"+
		"  dns: {servers: [%q], timeout: 2s, dnssec: trust_ad}\n  tls: {ca_file: %s}\n  mta_sts: {https_port: %d}\n%s",
		t.TempDir(), s.port, dns, s.ca.File, httpsPort, extraDelivery)
	s.config = filepath.Join(t.TempDir(), "jetrelay.yaml")
	if err := os.WriteFile(s.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

// mx starts a fake MX for host (MX preference 10 of domain) with cert
// (nil: no STARTTLS).
func (s *tlsSetup) mx(domain, host string, cert *tls.Certificate) *relaytest.MX {
	s.t.Helper()
	opts := []relaytest.Option{relaytest.Port(s.port)}
	if cert != nil {
		opts = append(opts, relaytest.StartTLS(cert))
	}
	m := relaytest.FakeMX(s.t, opts...)
	s.zone.AddMX(domain, 10, host)
	s.zone.AddA(host, m.IP)
	return m
}

// policy publishes an MTA-STS policy for domain.
func (s *tlsSetup) policy(domain, mode, mx string) {
	s.sts[domain] = "version: STSv1\nmode: " + mode + "\nmx: " + mx + "\nmax_age: 86400\n"
	s.zone.AddTXTRecords("_mta-sts."+domain, "v=STSv1; id=20261207")
	s.zone.AddA("mta-sts."+domain, s.stsIP)
}

// check runs tls check DOMAIN --json and decodes it; NATS is unreachable
// unless extra names it.
func (s *tlsSetup) check(domain string, extra ...string) (int, tlsReport, string) {
	s.t.Helper()
	args := append([]string{"tls", "check", domain, "--config", s.config, "--json"}, extra...)
	if !slices.Contains(extra, "--nats") {
		args = append(args, "--nats", fmt.Sprintf("nats://%s:%d", relaytest.ClosedAddr(s.t, s.port), s.port))
	}
	rc, out, errOut := runCmd(s.t, args...)
	var rep tlsReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		s.t.Fatalf("rc=%d: %v\n%s\n%s", rc, err, out, errOut)
	}
	return rc, rep, out
}

// tlsCheckCase is one domain and what tls check must say about it.
type tlsCheckCase struct {
	domain     string
	rc         int
	policy     string // the first host's tls_policy
	tlsFailure string // its first probe's tls_failure
	webPKI     string // its first probe's webpki_failure ("": ok)
	dane       string // "match", a DANE failure type or ""
	hostsError string // prefix of hosts_error
}

// `tls check` against loopback servers: MTA-STS enforce with a good,
// mismatched, expired and self-signed certificate, a policy that names no
// MX, testing mode, DANE-EE match (outranking an MTA-STS policy that names
// no MX) and mismatch, DANE-TA, a failed TLSA lookup for
// a secure MX (unusable, RFC 7672 §2.2), an opportunistic domain;
// the JSON object says the policy, the handshake, the certificate checks
// and the exit status says whether the policy can be met now.
func TestTLSCheck(t *testing.T) {
	t.Parallel()
	s := newTLSSetup(t, "")
	ca := s.ca
	good := ca.ChainCert(t, "mx1.good.test")
	mismatch := ca.ChainCert(t, "mx.elsewhere.test")
	expired := ca.ExpiredCert(t, "mx1.expired.test")
	self := relaytest.SelfSigned(t, "mx1.self.test")
	daneCert := relaytest.SelfSigned(t, "mx1.dane.test")
	other := relaytest.SelfSigned(t, "other.test")
	testingSelf := relaytest.SelfSigned(t, "mx1.testing.test")
	for dom, cert := range map[string]*tls.Certificate{"good.test": &good, "mismatch.test": &mismatch,
		"expired.test": &expired, "self.test": &self, "nomatch.test": &good, "testing.test": &testingSelf} {
		s.mx(dom, "mx1."+dom, cert)
		mode := "enforce"
		if dom == "testing.test" {
			mode = "testing"
		}
		s.policy(dom, mode, "mx1."+dom)
	}
	s.sts["nomatch.test"] = "version: STSv1\nmode: enforce\nmx: *.elsewhere.test\nmax_age: 86400\n"
	for _, dom := range []string{"dane.test", "dane-bad.test", "plain.test", "dane-servfail.test"} {
		cert := &daneCert
		if dom != "dane.test" {
			c := relaytest.SelfSigned(t, "mx1."+dom)
			cert = &c
		}
		s.mx(dom, "mx1."+dom, cert)
	}
	s.policy("dane.test", "enforce", "*.elsewhere.test") // DANE outranks MTA-STS: the host stays
	s.zone.SetSecure("dane.test", true)
	s.zone.SetSecure("dane-bad.test", true)
	s.zone.SetSecure("dane-servfail.test", true)
	taCert := ca.ChainCert(t, "mx1.dane-ta.test")
	s.mx("dane-ta.test", "mx1.dane-ta.test", &taCert)
	s.zone.SetSecure("dane-ta.test", true)
	s.zone.AddTLSA(fmt.Sprintf("_%d._tcp.mx1.dane-ta.test", s.port), 2, 0, 1, relaytest.CertSHA256(ca.Certificate()))
	s.zone.SetServFail(fmt.Sprintf("_%d._tcp.mx1.dane-servfail.test", s.port), true)
	s.zone.AddTLSA(fmt.Sprintf("_%d._tcp.mx1.dane.test", s.port), 3, 1, 1, relaytest.SPKISHA256(daneCert.Leaf))
	s.zone.AddTLSA(fmt.Sprintf("_%d._tcp.mx1.dane-bad.test", s.port), 3, 1, 1, relaytest.SPKISHA256(other.Leaf))

	for _, c := range []tlsCheckCase{
		{domain: "good.test", rc: 0, policy: "mta-sts"},
		{domain: "mismatch.test", rc: 1, policy: "mta-sts", tlsFailure: "certificate-host-mismatch",
			webPKI: "certificate-host-mismatch"},
		{domain: "expired.test", rc: 1, policy: "mta-sts", tlsFailure: "certificate-expired", webPKI: "certificate-expired"},
		{domain: "self.test", rc: 1, policy: "mta-sts", tlsFailure: "certificate-not-trusted",
			webPKI: "certificate-not-trusted"},
		{domain: "testing.test", rc: 0, policy: "mta-sts-testing", tlsFailure: "certificate-not-trusted",
			webPKI: "certificate-not-trusted"},
		{domain: "nomatch.test", rc: 1, policy: "mta-sts", hostsError: "451 4.7.5"},
		{domain: "dane.test", rc: 0, policy: "dane", webPKI: "certificate-not-trusted", dane: "match"},
		{domain: "dane-ta.test", rc: 0, policy: "dane", dane: "match"},
		{domain: "dane-bad.test", rc: 1, policy: "dane", tlsFailure: "validation-failure",
			webPKI: "certificate-not-trusted", dane: "validation-failure"},
		{domain: "plain.test", rc: 0, policy: "opportunistic", webPKI: "certificate-not-trusted"},
		{domain: "dane-servfail.test", rc: 1, policy: "opportunistic", hostsError: "451 4.7.5"},
	} {
		t.Run(c.domain, func(t *testing.T) {
			rc, rep, out := s.check(c.domain)
			checkTLSReport(t, c, rc, rep, out)
		})
	}
}

func checkTLSReport(t *testing.T, c tlsCheckCase, rc int, rep tlsReport, out string) {
	t.Helper()
	if rc != c.rc || rep.Met != (c.rc == 0) || len(rep.Hosts) != 1 {
		t.Fatalf("rc=%d met=%v hosts=%d, want rc %d and one host\n%s", rc, rep.Met, len(rep.Hosts), c.rc, out)
	}
	h := rep.Hosts[0]
	if h.Policy != c.policy || h.Preference != 10 || h.Name != "mx1."+c.domain {
		t.Fatalf("host %+v, want mx1.%s pref 10 under %s\n%s", h, c.domain, c.policy, out)
	}
	if c.hostsError != "" {
		if !strings.HasPrefix(rep.HostsError, c.hostsError) || h.Excluded == "" || rc != 1 {
			t.Fatalf("hosts_error %q excluded %q, want %s and the host left out\n%s", rep.HostsError, h.Excluded,
				c.hostsError, out)
		}
		return
	}
	if len(h.Probes) != 1 {
		t.Fatalf("%d probes, want 1\n%s", len(h.Probes), out)
	}
	p := h.Probes[0]
	wantWebPKI := "ok"
	if c.webPKI != "" {
		wantWebPKI = p.WebPKI // the error text; its type is checked below
	}
	if p.TLSFailure != c.tlsFailure || p.WebPKIFailure != c.webPKI || p.WebPKI != wantWebPKI || !p.STARTTLS ||
		len(p.Certs) == 0 {
		t.Fatalf("probe %+v, want tls_failure %q, webpki_failure %q, STARTTLS and a certificate\n%s", p,
			c.tlsFailure, c.webPKI, out)
	}
	if got := p.DANE; c.dane == "match" && got != "match" || c.dane != "match" && p.DANEFailure != c.dane {
		t.Fatalf("probe dane %q (%s), want %s\n%s", got, p.DANEFailure, c.dane, out)
	}
	if c.policy == "dane" && (!h.DANE || !h.MXSecure || !h.AddrSecure || len(h.TLSA) != 1 || !h.TLSA[0].Secure ||
		h.Excluded != "") {
		t.Fatalf("host %+v: want secure MX and addresses with usable TLSA records\n%s", h, out)
	}
	if c.domain == "expired.test" && !p.Certs[0].Expired || c.domain != "expired.test" && p.Certs[0].Expired {
		t.Fatalf("certificate %+v: expired flag wrong\n%s", p.Certs[0], out)
	}
	if strings.HasPrefix(c.policy, "mta-sts") && (rep.MTASTS == nil || rep.MTASTS.Live == nil ||
		rep.MTASTS.ID != "20261207" || rep.MTASTS.Source != "fetch" || rep.MTASTS.CacheError == "") {
		t.Fatalf("mta_sts %+v: want the live policy, id 20261207, used from the fetch, cache unavailable\n%s",
			rep.MTASTS, out)
	}
}

// The text report of a DANE domain without MX records (its own implicit
// MX, RFC 7672 §2.2.1) and of an MTA-STS enforce domain whose server does
// not offer STARTTLS: what each line says and the exit status.
func TestTLSCheckText(t *testing.T) {
	t.Parallel()
	s := newTLSSetup(t, "")
	cert := relaytest.SelfSigned(t, "implicit.test")
	m := relaytest.FakeMX(t, relaytest.Port(s.port), relaytest.StartTLS(&cert))
	s.zone.AddA("implicit.test", m.IP)
	s.zone.SetSecure("implicit.test", true)
	s.zone.AddTLSA(fmt.Sprintf("_%d._tcp.implicit.test", s.port), 3, 1, 1, relaytest.SPKISHA256(cert.Leaf))
	s.mx("good.test", "mx1.good.test", nil) // enforce, but no STARTTLS
	s.policy("good.test", "enforce", "mx1.good.test")
	nats := fmt.Sprintf("nats://%s:%d", relaytest.ClosedAddr(t, s.port), s.port)

	rc, out, errOut := runCmd(t, "tls", "check", "implicit.test", "--config", s.config, "--nats", nats)
	for _, want := range []string{
		"domain implicit.test\n",
		"dnssec  trust_ad (127.0.0.1:",
		"dane    on\n",
		"mta-sts record no MTA-STS record\n",
		"        in use none (delivered as without MTA-STS, RFC 8461 §5)\n",
		"policy  opportunistic (no MX records: the domain is its own MX; MX denial secure: true)\n",
		fmt.Sprintf("MX 0 implicit.test  addresses %s  (MX secure true, addresses secure true)\n", m.IP),
		fmt.Sprintf("   tlsa     _%d._tcp.implicit.test (secure true)\n", s.port),
		"usable true\n",
		"   policy   dane: STARTTLS and a certificate matching the TLSA records (RFC 7672)\n",
		fmt.Sprintf("   probe    %s: OK  tls TLS1.", m.IP),
		"   cert     CN=implicit.test,O=jetrelay self-signed names implicit.test issuer",
		"   dane     match\n",
		"OK: implicit.test accepts a session meeting its policy (1 MX host usable)\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("implicit.test: output lacks %q", want)
		}
	}
	if rc != 0 || t.Failed() {
		t.Fatalf("implicit.test: rc=%d\n%s\n%s", rc, out, errOut)
	}

	rc, out, errOut = runCmd(t, "tls", "check", "good.test", "--config", s.config, "--nats", nats)
	for _, want := range []string{
		"mta-sts record v=STSv1; id=20261207\n",
		"        live   mode enforce, mx mx1.good.test, max_age 86400\n",
		"        cached unavailable: NATS not reachable",
		"        in use mode enforce, mx mx1.good.test (from fetch)\n",
		"   policy   mta-sts: STARTTLS and a certificate valid for mx1.good.test (WebPKI roots and delivery.tls.ca_file)\n",
		"starttls false",
		"451 4.7.5 TLS handshake or certificate check failed: MTA-STS policy (enforce): TLS is required but the server does not offer STARTTLS [starttls-not-supported]",
		"FAIL: no MX host delivery would try accepted a session meeting its policy\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("good.test: output lacks %q", want)
		}
	}
	if rc != 1 || t.Failed() {
		t.Fatalf("good.test: rc=%d\n%s\n%s", rc, out, errOut)
	}
}

// Bounds and guards: MX hosts beyond --max-mx are listed but not probed;
// delivery.denied_networks (loopback denied by default) refuses the probe
// (exit 1, nothing reached); a domain routed to a smarthost is not probed.
func TestTLSCheckBounds(t *testing.T) {
	t.Parallel()
	s := newTLSSetup(t, "  routes: [{domains: [routed.test], host: \"smarthost.test:25\", tls: starttls}]\n")
	var servers []*relaytest.MX
	for i := 1; i <= 3; i++ {
		servers = append(servers, s.mx("many.test", fmt.Sprintf("mx%d.many.test", i), nil))
	}
	rc, rep, out := s.check("many.test", "--max-mx", "1")
	probed := 0
	for _, h := range rep.Hosts {
		probed += len(h.Probes)
	}
	if rc != 0 || len(rep.Hosts) != 3 || probed != 1 || rep.Unprobed != 2 || rep.Hosts[0].Policy != "opportunistic" {
		t.Fatalf("rc=%d hosts=%d probed=%d unprobed=%d, want 0, 3, 1, 2\n%s", rc, len(rep.Hosts), probed,
			rep.Unprobed, out)
	}
	rc, rep, out = s.check("routed.test")
	if rc != 0 || rep.Route == nil || rep.Route.Host != "smarthost.test:25" || !rep.Route.Verify || len(rep.Hosts) != 0 {
		t.Fatalf("routed: rc=%d route=%+v hosts=%d\n%s", rc, rep.Route, len(rep.Hosts), out)
	}

	denied := newTLSSetup(t, "  allowed_networks: []\n")
	m := denied.mx("guarded.test", "mx1.guarded.test", nil)
	rc, rep, out = denied.check("guarded.test")
	if rc != 1 || len(rep.Hosts) != 1 || len(rep.Hosts[0].Probes) == 0 || rep.Hosts[0].Probes[0].Met ||
		!strings.Contains(rep.Hosts[0].Probes[0].Error, "denied") || m.Connections() != 0 {
		t.Fatalf("denied network: rc=%d connections=%d\n%s", rc, m.Connections(), out)
	}
	conns := 0
	for _, srv := range servers {
		conns += srv.Connections()
	}
	if conns != 1 { // the first probe needs one connection (no STARTTLS: nothing to capture)
		t.Fatalf("%d connections to many.test's hosts: a host beyond --max-mx was dialled", conns)
	}
}

// The cached MTA-STS policy is read from KV (never written): when the
// record's id changed and the fetch fails, delivery keeps the unexpired
// cached policy, and the check says so and enforces it.
func TestTLSCheckCachedPolicy(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	q := queuetest.RunJetStream(t, queuetest.Options{DataDir: dir, Listen: "127.0.0.1:0"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := mtasts.OpenBucket(ctx, q.JetStream(), 1)
	if err != nil {
		t.Fatal(err)
	}
	fetched := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	if _, err := kv.Put(ctx, "good.test", []byte(`{"id":"old","policy":{"mode":"enforce","mx":["*.elsewhere.test"],`+
		`"max_age":86400},"fetched":"`+fetched+`"}`)); err != nil {
		t.Fatal(err)
	}
	s := newTLSSetup(t, "")
	good := s.ca.ChainCert(t, "mx1.good.test")
	s.mx("good.test", "mx1.good.test", &good)
	s.policy("good.test", "enforce", "mx1.good.test")
	delete(s.sts, "good.test") // the policy host answers 404: the fetch fails
	rc, rep, out := s.check("good.test", "--nats", q.ClientURL(), "--user", queue.EmbeddedUser, "--password-file",
		filepath.Join(dir, queue.PasswordFileName))
	st := rep.MTASTS
	if rc != 1 || st == nil || st.Cached == nil || st.Cached.ID != "old" || st.Source != "cache" ||
		st.InForce == nil || st.InForce.MX[0] != "*.elsewhere.test" ||
		st.LiveFailure != "sts-policy-fetch-error" || rep.STSFailure != "sts-policy-fetch-error" ||
		rep.HostsError == "" || rep.Hosts[0].Excluded == "" {
		t.Fatalf("rc=%d: want the cached policy (id old) in force, excluding mx1.good.test\n%s", rc, out)
	}
	e, err := kv.Get(ctx, "good.test")
	if err != nil || e.Revision() != 1 {
		t.Fatalf("cache entry revision %v (%v): the check wrote the cache", e, err)
	}
}
