package smtpclient_test

import (
	"strings"
	"testing"

	"github.com/jetrelay/jetrelay/relay/relaytest"
	"github.com/jetrelay/jetrelay/relay/smtpclient"
)

// tlsCase is one TLS policy against one fake server.
type tlsCase struct {
	domain     string
	policy     smtpclient.TLSPolicy
	server     []relaytest.Option
	ca         bool   // certificate from the test CA for mx.<domain>
	self       bool   // self-signed certificate for mx.<domain>
	want       string // "tls", "plain", "temporary:<enh>", "permanent:<enh>"
	requireTLS bool
	minConns   int
}

// Every TLS policy against a server offering STARTTLS, one without it and
// one whose handshake breaks; `verify` refuses a self-signed certificate
// and accepts one from the configured roots; REQUIRETLS needs verified TLS
// and the REQUIRETLS keyword, else fails 550 5.7.30 at once (RFC 8689 §5).
func TestTLSPolicies(t *testing.T) {
	t.Parallel()
	starttls, broken := []relaytest.Option{relaytest.StartTLS(nil)}, []relaytest.Option{relaytest.BrokenTLS()}
	rtls := []relaytest.Option{relaytest.RequireTLS()}
	opp, req, ver := smtpclient.PolicyOpportunistic, smtpclient.PolicyRequired, smtpclient.PolicyVerify
	cases := []tlsCase{
		{domain: "opp-on.test", policy: opp, server: starttls, want: "tls"},
		{domain: "opp-off.test", policy: opp, want: "plain"},
		{domain: "opp-broken.test", policy: opp, server: broken, want: "plain", minConns: 2},
		{domain: "none-on.test", policy: smtpclient.PolicyNone, server: starttls, want: "plain"},
		{domain: "none-broken.test", policy: smtpclient.PolicyNone, server: broken, want: "plain"},
		{domain: "req-on.test", policy: req, server: starttls, want: "tls"},
		{domain: "req-off.test", policy: req, want: "temporary:4.7.4"},
		{domain: "req-broken.test", policy: req, server: broken, want: "temporary:4.7.5"},
		{domain: "ver-self.test", policy: ver, self: true, want: "temporary:4.7.5"},
		{domain: "ver-ca.test", policy: ver, ca: true, want: "tls"},
		{domain: "ver-off.test", policy: ver, want: "temporary:4.7.4"},
		{domain: "ver-broken.test", policy: ver, server: broken, want: "temporary:4.7.5"},
		{domain: "rtls-ok.test", policy: opp, ca: true, server: rtls, requireTLS: true, want: "tls"},
		{domain: "rtls-no.test", policy: opp, ca: true, requireTLS: true, want: "permanent:5.7.30"},
		{domain: "rtls-self.test", policy: opp, self: true, server: rtls, requireTLS: true, want: "permanent:5.7.30"},
	}
	ca := relaytest.NewCA(t)
	z := newZone()
	policies := smtpclient.StaticPolicies{Domains: map[string]smtpclient.TLSPolicy{}}
	servers := map[string]*relaytest.MX{}
	port := 0
	for _, c := range cases {
		opts := c.server
		if c.ca || c.self {
			cert := ca.Cert(t, "mx."+c.domain)
			if c.self {
				cert = relaytest.SelfSigned(t, "mx."+c.domain)
			}
			opts = append([]relaytest.Option{relaytest.StartTLS(&cert)}, opts...)
		}
		if port != 0 {
			opts = append(opts, relaytest.Port(port))
		}
		m := relaytest.FakeMX(t, opts...)
		port = m.Port
		servers[c.domain] = m
		z.add(c.domain, m.IP)
		policies.Domains[c.domain] = c.policy
	}
	client := newClient(t, z, port, func(o *smtpclient.Options) { o.Policies, o.Roots = policies, ca.Pool })
	for _, c := range cases {
		t.Run(c.domain, func(t *testing.T) {
			t.Parallel()
			a := deliver(t, client, "x@"+c.domain, func(m *smtpclient.Message) { m.RequireTLS = c.requireTLS })
			checkTLSCase(t, servers[c.domain], a, c)
		})
	}
}

func checkTLSCase(t *testing.T, m *relaytest.MX, a smtpclient.Attempt, c tlsCase) {
	t.Helper()
	rcpt := "x@" + c.domain
	kind, enh, _ := strings.Cut(c.want, ":")
	switch kind {
	case "tls", "plain":
		wantReply(t, a, 250, "2.0.0")
		msgs := m.Messages()
		if len(msgs) != 1 || (msgs[0].TLS != nil) != (kind == "tls") {
			t.Fatalf("received %d messages, TLS=%v, want %s", len(msgs), len(msgs) == 1 && msgs[0].TLS != nil, kind)
		}
		if kind == "tls" && !strings.HasPrefix(a.Conn.TLS, "TLS1.") || kind == "plain" && a.Conn.TLS != "none" {
			t.Fatalf("connection tls=%q", a.Conn.TLS)
		}
		if m.Connections() < c.minConns {
			t.Fatalf("%d connections, want at least %d (plaintext retry)", m.Connections(), c.minConns)
		}
		if c.requireTLS && !msgs[0].MailOpts.RequireTLS {
			t.Fatal("REQUIRETLS not passed on")
		}
	case "temporary", "permanent":
		if len(a.Replies) != 1 || a.Replies[0].Enh != enh || a.Replies[0].Temporary() != (kind == "temporary") {
			t.Fatalf("replies %+v, want %s %s", a.Replies, kind, enh)
		}
		if m.Received(rcpt) != 0 {
			t.Fatal("mail sent despite the TLS policy")
		}
	}
}

// The delivery log's tls_policy uses issue 17's names: a domain's own
// delivery.tls.domains entry is "configured" whatever it says, a default
// of required or verify is "configured" too, an opportunistic default
// "opportunistic" and none "none"; REQUIRETLS sits on top of the domain's
// policy and keeps its name.
func TestTLSPolicyNames(t *testing.T) {
	t.Parallel()
	ca := relaytest.NewCA(t)
	cert := ca.Cert(t, "mx.names.test", "mx.own.names.test")
	m := relaytest.FakeMX(t, relaytest.StartTLS(&cert), relaytest.RequireTLS())
	z := newZone()
	z.add("names.test", m.IP)
	z.add("own.names.test", m.IP)
	for _, c := range []struct {
		def        smtpclient.TLSPolicy
		domain     string
		requireTLS bool
		want       string
	}{
		{smtpclient.PolicyOpportunistic, "names.test", false, "opportunistic"},
		{"", "names.test", false, "opportunistic"},
		{smtpclient.PolicyNone, "names.test", false, "none"},
		{smtpclient.PolicyRequired, "names.test", false, "configured"},
		{smtpclient.PolicyVerify, "names.test", false, "configured"},
		{smtpclient.PolicyNone, "own.names.test", false, "configured"},
		{smtpclient.PolicyOpportunistic, "names.test", true, "opportunistic"},
		{smtpclient.PolicyNone, "own.names.test", true, "configured"},
	} {
		pol := smtpclient.StaticPolicies{Default: c.def,
			Domains: map[string]smtpclient.TLSPolicy{"own.names.test": smtpclient.PolicyOpportunistic}}
		cl := newClient(t, z, m.Port, func(o *smtpclient.Options) { o.Policies, o.Roots = pol, ca.Pool })
		a := deliver(t, cl, "x@"+c.domain, func(msg *smtpclient.Message) { msg.RequireTLS = c.requireTLS })
		wantReply(t, a, 250, "2.0.0")
		if a.Conn.TLSPolicy != c.want {
			t.Errorf("default %q, %s, requiretls %v: tls_policy %q, want %q", c.def, c.domain, c.requireTLS,
				a.Conn.TLSPolicy, c.want)
		}
	}
}
