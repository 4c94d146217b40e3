package deliver_test

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/relaytest"
)

// TLS policies from delivery.tls (each policy name, ca_file) and the
// envelope's REQUIRETLS reach the client, and their outcomes settle: the
// event says tls=TLS1.x or none, a policy refusal defers (stored, not
// reported), a REQUIRETLS refusal fails at once (reported, never retried,
// RFC 8689 §5). The whole policy × server matrix (broken handshakes,
// plaintext fallback, missing STARTTLS) is smtpclient's TestTLSPolicies.
func TestTLSPolicies(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ca := relaytest.NewCA(t)
	type tcase struct {
		domain, policy string
		server         []relaytest.Option
		ca             bool   // certificate from the test CA for mx1.<domain>
		self           bool   // self-signed certificate for mx1.<domain>
		want           string // "tls", "plain", "deferred:<enh>", "failed:<enh>"
		requireTLS     bool
	}
	cases := []tcase{
		{domain: "opp-on.test", policy: "opportunistic", server: []relaytest.Option{relaytest.StartTLS(nil)}, want: "tls"},
		{domain: "none-on.test", policy: "none", server: []relaytest.Option{relaytest.StartTLS(nil)}, want: "plain"},
		{domain: "req-off.test", policy: "required", want: "deferred:4.7.4"},
		{domain: "ver-ca.test", policy: "verify", ca: true, want: "tls"},
		{domain: "ver-self.test", policy: "verify", self: true, want: "deferred:4.7.5"},
		{domain: "rtls-ok.test", policy: "opportunistic", ca: true, server: []relaytest.Option{relaytest.RequireTLS()},
			requireTLS: true, want: "tls"},
		{domain: "rtls-no.test", policy: "opportunistic", ca: true, requireTLS: true, want: "failed:5.7.30"},
	}
	cfg := h.config()
	cfg.Delivery.TLS.CAFile = ca.File
	cfg.Delivery.TLS.Domains = map[string]string{}
	servers := map[string]*relaytest.MX{}
	ids := map[string]string{}
	for _, c := range cases {
		opts := c.server
		if c.ca || c.self {
			cert := ca.Cert(t, "mx1."+c.domain)
			if c.self {
				cert = relaytest.SelfSigned(t, "mx1."+c.domain)
			}
			opts = append([]relaytest.Option{relaytest.StartTLS(&cert)}, opts...)
		}
		m := h.mx(opts...)
		servers[c.domain] = m
		h.domain(c.domain, m.IP)
		cfg.Delivery.TLS.Domains[c.domain] = c.policy
	}
	h.start(cfg)
	for _, c := range cases {
		ids[c.domain] = h.send([]string{"x@" + c.domain}, func(e *queue.Envelope) { e.RequireTLS = c.requireTLS })
	}
	for _, c := range cases {
		t.Run(c.domain, func(t *testing.T) {
			checkTLSCase(t, h, servers[c.domain], "x@"+c.domain, ids[c.domain], c.want)
		})
	}
}

func checkTLSCase(t *testing.T, h *harness, m *relaytest.MX, rcpt, id, want string) {
	kind, enh, _ := strings.Cut(want, ":")
	switch kind {
	case "tls", "plain":
		relaytest.Eventually(h.t, rcpt+" delivered", func() bool {
			return m.Received(rcpt) == 1 && len(h.deliveries(rcpt, events.StatusDelivered)) == 1
		})
		msg := m.Messages()[0]
		if (msg.TLS != nil) != (kind == "tls") {
			t.Fatalf("received with TLS=%v, want %s", msg.TLS != nil, kind)
		}
		ev := h.deliveries(rcpt, events.StatusDelivered)[0]
		if kind == "tls" && !strings.HasPrefix(ev.TLS, "TLS1.") || kind == "plain" && ev.TLS != "none" {
			t.Fatalf("event tls=%v", ev.TLS)
		}
	case "deferred":
		relaytest.Eventually(h.t, rcpt+" deferred", func() bool {
			return len(h.deliveries(rcpt, events.StatusDeferred)) >= 1
		})
		if ev := h.deliveries(rcpt, events.StatusDeferred)[0]; ev.SMTPEnh != enh {
			t.Fatalf("deferred with %v (%v), want %s", ev.SMTPEnh, ev.Reply, enh)
		}
		if m.Received(rcpt) != 0 || !h.stored(id) || len(h.rep.failures(rcpt)) != 0 {
			t.Fatalf("deferred mail delivered, lost or reported (stored=%v)", h.stored(id))
		}
	case "failed":
		relaytest.Eventually(h.t, rcpt+" failed", func() bool { return len(h.rep.failures(rcpt)) == 1 })
		if f := h.rep.failures(rcpt)[0]; f.Enh != enh || f.Temporary {
			t.Fatalf("failed with %+v, want permanent %s", f, enh)
		}
		if m.Received(rcpt) != 0 || len(h.deliveries(rcpt, events.StatusDeferred)) != 0 {
			t.Fatal("REQUIRETLS mail sent or retried")
		}
	}
	if kind == "tls" && strings.HasPrefix(rcpt, "x@rtls") {
		if !m.Messages()[0].MailOpts.RequireTLS {
			t.Fatal("REQUIRETLS not passed on")
		}
	}
}

// A smarthost route: implicit TLS verified against ca_file, AUTH PLAIN
// with the password from the environment; the recipient domain's MX is
// never looked up.
func TestSmarthostRouteWithAuth(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ca := relaytest.NewCA(t)
	cert := ca.Cert(t, "smarthost.test")
	up := h.mx(relaytest.ImplicitTLS(&cert), relaytest.Auth("relay", "s3cret"))
	h.zone.AddA("smarthost.test", up.IP)
	env := "JR_TEST_PASS_" + randHex(t)
	if err := os.Setenv(env, "s3cret"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Unsetenv(env) })
	cfg := h.config()
	cfg.Delivery.TLS.CAFile = ca.File
	cfg.Delivery.Routes = []config.Route{{Domains: []string{"*"}, Host: "smarthost.test:" + itoa(h.port),
		TLS: "implicit", Auth: &config.RouteAuth{User: "relay", PasswordEnv: env}}}
	h.start(cfg)
	h.send([]string{"x@anywhere.test", "y@anywhere.test"})
	relaytest.Eventually(h.t, "relayed through the smarthost", func() bool {
		return up.Received("x@anywhere.test") == 1 && up.Received("y@anywhere.test") == 1 &&
			len(h.deliveries("x@anywhere.test", events.StatusDelivered)) == 1
	})
	msg := up.Messages()[0]
	if msg.User != "relay" || msg.TLS == nil {
		t.Fatalf("user %q tls %v", msg.User, msg.TLS != nil)
	}
	ev := h.deliveries("x@anywhere.test", events.StatusDelivered)[0]
	if ev.TLSVerified == nil || !*ev.TLSVerified || ev.MX != "smarthost.test" {
		t.Fatalf("event %v", ev)
	}
	if n := h.zone.Queries("anywhere.test", 15 /* MX */); n != 0 {
		t.Fatalf("%d MX lookups for a routed domain", n)
	}
}

func randHex(t *testing.T) string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return strings.ToUpper(hex.EncodeToString(b))
}
