package deliver_test

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/relay/certgen"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/mtasts"
	"github.com/jetrelay/jetrelay/relay/relaytest"
	"github.com/nats-io/nats.go/jetstream"
)

// stsServer is one local HTTPS server answering for mta-sts.<domain> of
// every test domain (by Host header), with a certificate from the test CA.
type stsServer struct {
	mu       sync.Mutex
	policies map[string]string // domain → policy file; missing: 404
	port     int
}

func (s *stsServer) set(domain, body string) {
	s.mu.Lock()
	s.policies[domain] = body
	s.mu.Unlock()
}

func startSTSServer(t *testing.T, cert tls.Certificate) *stsServer {
	s := &stsServer{policies: map[string]string{}}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.Host)
		s.mu.Lock()
		body, ok := s.policies[strings.TrimPrefix(host, "mta-sts.")]
		s.mu.Unlock()
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
	srv.Listener, srv.TLS = ln, &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	s.port = ln.Addr().(*net.TCPAddr).Port
	return s
}

func stsPolicy(mode, mx string) string {
	return "version: STSv1\nmode: " + mode + "\nmx: " + mx + "\nmax_age: 86400\n"
}

func openSTSBucket(t *testing.T, h *harness) jetstream.KeyValue {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	kv, err := mtasts.OpenBucket(ctx, h.q.JetStream(), 1)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// MTA-STS (RFC 8461) through the engine: enforce delivers only over TLS
// verified for an MX host the policy names, and defers everything else
// with 4.7.5 (stored, not delivered in plaintext, not reported); testing
// and a failed fetch without a cached policy deliver as before and record
// tls_failure; every event names the policy.
func TestMTASTS(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ca := relaytest.NewCA(t)
	type tcase struct {
		domain, mode, mx string // mode "": TXT record but no policy file (404)
		cert             string // "ca" (for mx1.<domain>), "other" (CA, other name), "expired", "self", "" (no STARTTLS)
		want             string // "tls", "deferred:4.7.5"
		policy, failure  string // tls_policy, tls_failure of the event
		configured       string // delivery.tls.domains entry
	}
	cases := []tcase{
		{domain: "enf-ok.test", mode: "enforce", cert: "ca", want: "tls", policy: "mta-sts"},
		{domain: "enf-name.test", mode: "enforce", cert: "other", want: "deferred:4.7.5", policy: "mta-sts",
			failure: "certificate-host-mismatch"},
		{domain: "enf-self.test", mode: "enforce", cert: "self", want: "deferred:4.7.5", policy: "mta-sts",
			failure: "certificate-not-trusted"},
		{domain: "enf-exp.test", mode: "enforce", cert: "expired", want: "deferred:4.7.5", policy: "mta-sts",
			failure: "certificate-expired"},
		{domain: "enf-plain.test", mode: "enforce", want: "deferred:4.7.5", policy: "mta-sts",
			failure: "starttls-not-supported"},
		{domain: "enf-mx.test", mode: "enforce", mx: "mail.elsewhere.test", cert: "ca", want: "deferred:4.7.5",
			policy: "mta-sts", failure: "validation-failure"},
		{domain: "enf-wild.test", mode: "enforce", mx: "*.enf-wild.test", cert: "ca", want: "tls", policy: "mta-sts"},
		{domain: "tst.test", mode: "testing", cert: "self", want: "tls", policy: "mta-sts-testing",
			failure: "certificate-not-trusted"},
		{domain: "tst-ok.test", mode: "testing", cert: "ca", want: "tls", policy: "mta-sts-testing"},
		// Policy order: enforce > delivery.tls.domains > testing.
		{domain: "cfg-enf.test", mode: "enforce", cert: "ca", configured: "none", want: "tls", policy: "mta-sts"},
		{domain: "cfg-tst.test", mode: "testing", cert: "self", configured: "opportunistic", want: "tls",
			policy: "configured", failure: "certificate-not-trusted"},
		{domain: "nofile.test", cert: "self", want: "tls", policy: "opportunistic", failure: "sts-policy-fetch-error"},
	}
	var names []string
	for _, c := range cases {
		names = append(names, "mta-sts."+c.domain)
	}
	srv := startSTSServer(t, ca.Cert(t, names...))
	cfg := h.config()
	old := expiringCA(t, ca)
	cfg.Delivery.TLS.CAFile = old.file
	cfg.Delivery.MTASTS.HTTPSPort = srv.port
	cfg.Delivery.TLS.Domains = map[string]string{}
	servers := map[string]*relaytest.MX{}
	for _, c := range cases {
		if c.configured != "" {
			cfg.Delivery.TLS.Domains[c.domain] = c.configured
		}
		var opts []relaytest.Option
		if c.cert != "" {
			cert := map[string]func() tls.Certificate{
				"ca":    func() tls.Certificate { return ca.Cert(t, "mx1."+c.domain) },
				"other": func() tls.Certificate { return ca.Cert(t, "other.test") },
				"self":  func() tls.Certificate { return relaytest.SelfSigned(t, "mx1."+c.domain) },
				"expired": func() tls.Certificate {
					cert, err := old.ca.Issue([]string{"mx1." + c.domain}, -time.Minute)
					if err != nil {
						t.Fatal(err)
					}
					return cert
				},
			}[c.cert]()
			opts = append(opts, relaytest.StartTLS(&cert))
		}
		m := h.mx(opts...)
		servers[c.domain] = m
		h.domain(c.domain, m.IP)
		h.zone.AddTXTRecords("_mta-sts."+c.domain, "v=STSv1; id=1")
		h.zone.AddA("mta-sts."+c.domain, "127.0.0.1")
		if c.mode != "" {
			mx := c.mx
			if mx == "" {
				mx = "mx1." + c.domain
			}
			srv.set(c.domain, stsPolicy(c.mode, mx))
		}
	}
	h.stsKV = openSTSBucket(t, h)
	h.start(cfg)
	ids := map[string]string{}
	for _, c := range cases {
		ids[c.domain] = h.send([]string{"x@" + c.domain})
	}
	for _, c := range cases {
		t.Run(c.domain, func(t *testing.T) {
			rcpt := "x@" + c.domain
			checkTLSCase(t, h, servers[c.domain], rcpt, ids[c.domain], c.want)
			status := events.StatusDelivered
			if strings.HasPrefix(c.want, "deferred") {
				status = events.StatusDeferred
			}
			ev := h.deliveries(rcpt, status)[0]
			if ev.TLSPolicy != c.policy || ev.TLSFailure != c.failure {
				t.Fatalf("event tls_policy=%q tls_failure=%q (%s); want %q %q", ev.TLSPolicy, ev.TLSFailure,
					ev.Reply, c.policy, c.failure)
			}
			if c.mx != "" && c.want != "tls" && servers[c.domain].Connections() != 0 {
				t.Fatal("an MX host the policy does not name was contacted")
			}
		})
	}
}

// A policy change (new TXT id) is fetched anew: an enforce policy that
// deferred mail is replaced by one naming the MX, and the mail goes out;
// a second engine on the same JetStream uses the cached policy.
func TestMTASTSPolicyChange(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ca := relaytest.NewCA(t)
	srv := startSTSServer(t, ca.Cert(t, "mta-sts.chg.test"))
	cert := ca.Cert(t, "mx1.chg.test")
	m := h.mx(relaytest.StartTLS(&cert))
	h.domain("chg.test", m.IP)
	h.zone.AddTXTRecords("_mta-sts.chg.test", "v=STSv1; id=1")
	h.zone.AddA("mta-sts.chg.test", "127.0.0.1")
	srv.set("chg.test", stsPolicy("enforce", "mail.elsewhere.test"))
	cfg := h.config()
	cfg.Delivery.TLS.CAFile = ca.File
	cfg.Delivery.MTASTS.HTTPSPort = srv.port
	h.stsKV = openSTSBucket(t, h)
	h.start(cfg)
	id := h.send([]string{"x@chg.test"})
	relaytest.Eventually(t, "deferred by the policy", func() bool {
		return len(h.deliveries("x@chg.test", events.StatusDeferred)) >= 1
	})
	if m.Received("x@chg.test") != 0 || !h.stored(id) {
		t.Fatal("deferred mail delivered or lost")
	}
	srv.set("chg.test", stsPolicy("enforce", "mx1.chg.test"))
	h.zone.SetTXTRecords("_mta-sts.chg.test", "v=STSv1; id=2")
	relaytest.Eventually(t, "delivered under the new policy", func() bool {
		return m.Received("x@chg.test") == 1 && len(h.deliveries("x@chg.test", events.StatusDelivered)) == 1
	})
	if ev := h.deliveries("x@chg.test", events.StatusDelivered)[0]; ev.TLSPolicy != "mta-sts" || !strings.HasPrefix(ev.TLS, "TLS1.") {
		t.Fatalf("delivered with tls_policy=%q tls=%q", ev.TLSPolicy, ev.TLS)
	}
}

// The cached policy outlives the engine and a failed refresh: a second
// engine on the same JetStream, whose fetch of a new id fails, still
// enforces the cached policy (the mail stays deferred, never delivered in
// breach of it); without the cache it would have failed open.
func TestMTASTSCachedPolicyKeptWhenFetchFails(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ca := relaytest.NewCA(t)
	srv := startSTSServer(t, ca.Cert(t, "mta-sts.keep.test"))
	cert := ca.Cert(t, "mx1.keep.test")
	m := h.mx(relaytest.StartTLS(&cert))
	h.domain("keep.test", m.IP)
	h.zone.AddTXTRecords("_mta-sts.keep.test", "v=STSv1; id=1")
	h.zone.AddA("mta-sts.keep.test", "127.0.0.1")
	srv.set("keep.test", stsPolicy("enforce", "mail.elsewhere.test"))
	cfg := h.config()
	cfg.Delivery.TLS.CAFile = ca.File
	cfg.Delivery.MTASTS.HTTPSPort = srv.port
	h.stsKV = openSTSBucket(t, h)
	stop := h.start(cfg)
	id := h.send([]string{"x@keep.test"})
	relaytest.Eventually(t, "deferred by the policy", func() bool {
		return len(h.deliveries("x@keep.test", events.StatusDeferred)) >= 1
	})
	stop()
	srv.mu.Lock()
	delete(srv.policies, "keep.test") // 404 from now on
	srv.mu.Unlock()
	h.zone.SetTXTRecords("_mta-sts.keep.test", "v=STSv1; id=2")
	before := len(h.deliveries("x@keep.test", events.StatusDeferred))
	h.stsKV = openSTSBucket(t, h)
	h.start(cfg)
	relaytest.Eventually(t, "deferred again under the cached policy", func() bool {
		return len(h.deliveries("x@keep.test", events.StatusDeferred)) > before
	})
	ev := h.deliveries("x@keep.test", events.StatusDeferred)[before]
	if ev.SMTPEnh != "4.7.5" || ev.TLSPolicy != "mta-sts" || m.Received("x@keep.test") != 0 || !h.stored(id) {
		t.Fatalf("event %+v; received %d, stored %v: want 4.7.5 under mta-sts, not delivered, stored",
			ev, m.Received("x@keep.test"), h.stored(id))
	}
	if len(h.rep.failures("x@keep.test")) != 0 {
		t.Fatal("a policy failure was reported as a bounce")
	}
}

// issuer is a second test CA that issues expired certificates, trusted
// through file (the test CA's PEM and its own).
type issuer struct {
	ca   *certgen.CA
	file string
}

func expiringCA(t *testing.T, ca *relaytest.CA) issuer {
	c, err := certgen.NewCA("jetrelay expired-cert CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(ca.File)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "cas.pem")
	if err := os.WriteFile(file, append(pem, c.CertPEM()...), 0o600); err != nil {
		t.Fatal(err)
	}
	return issuer{ca: c, file: file}
}
