package mtasts

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/jetrelay/jetrelay/relay/dnsclient"
	"github.com/jetrelay/jetrelay/relay/netguard"
	"github.com/jetrelay/jetrelay/relay/relaytest"
	"github.com/jetrelay/jetrelay/relay/smtpclient"
	"github.com/nats-io/nats.go/jetstream"
)

// policyServer is a local HTTPS policy host for mta-sts.example.com.
type policyServer struct {
	mu     sync.Mutex
	body   string
	status int
	hits   atomic.Int64
	port   int
}

func (p *policyServer) set(status int, body string) {
	p.mu.Lock()
	p.status, p.body = status, body
	p.mu.Unlock()
}

func startPolicyServer(t *testing.T, cert tls.Certificate, body string) *policyServer {
	t.Helper()
	p := &policyServer{body: body, status: http.StatusOK}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.hits.Add(1)
		p.mu.Lock()
		status, b := p.status, p.body
		p.mu.Unlock()
		if r.URL.Path != "/.well-known/mta-sts.txt" {
			status = http.StatusNotFound
		}
		if status == http.StatusFound {
			w.Header().Set("Location", "https://elsewhere.example/")
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(b))
	}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener = ln
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	p.port = ln.Addr().(*net.TCPAddr).Port
	return p
}

const enforceBody = "version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 86400\n"

type fixture struct {
	zone  *relaytest.Zone
	ca    *relaytest.CA
	srv   *policyServer
	js    jetstream.JetStream
	dns   string
	clock atomic.Pointer[time.Time]
}

func newFixture(t *testing.T, body string) *fixture {
	f := &fixture{zone: relaytest.NewZone(), ca: relaytest.NewCA(t)}
	f.zone.AddA("mta-sts.example.com", "127.0.0.1")
	f.zone.AddTXTRecords("_mta-sts.example.com", "v=STSv1; id=1")
	f.dns = relaytest.FakeDNS(t, f.zone)
	f.srv = startPolicyServer(t, f.ca.Cert(t, "mta-sts.example.com"), body)
	f.js = queuetest.RunJetStream(t).JetStream()
	now := time.Now()
	f.clock.Store(&now)
	return f
}

func (f *fixture) store(t *testing.T, guard *netguard.Guard) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := OpenBucket(ctx, f.js, 1)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{KV: kv, DNS: dnsclient.Options{Servers: []string{f.dns}, LoopbackOnly: true},
		Roots: f.ca.Pool, Guard: guard, Port: f.srv.port, Timeout: 5 * time.Second, Logger: relaytest.Logger(t),
		Now: func() time.Time { return *f.clock.Load() }})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (f *fixture) advance(d time.Duration) {
	n := f.clock.Load().Add(d)
	f.clock.Store(&n)
}

func lookup(t *testing.T, s *Store) smtpclient.STSResult {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return s.Lookup(ctx, "example.com")
}

func wantMode(t *testing.T, r smtpclient.STSResult, mode smtpclient.STSMode, failure string) {
	t.Helper()
	got := smtpclient.STSMode("")
	if r.Policy != nil {
		got = r.Policy.Mode
	}
	if got != mode || r.Failure != failure {
		t.Fatalf("result mode %q failure %q; want %q %q", got, r.Failure, mode, failure)
	}
}

func TestStoreFetchesAndCaches(t *testing.T) {
	f := newFixture(t, enforceBody)
	s := f.store(t, nil)
	r := lookup(t, s)
	wantMode(t, r, smtpclient.STSEnforce, "")
	if !r.Policy.Matches("mx.example.com") || r.Policy.Matches("other.example.com") {
		t.Fatalf("mx %v", r.Policy.MX)
	}
	wantMode(t, lookup(t, s), smtpclient.STSEnforce, "")
	// A second store on the same JetStream (another node, a restart)
	// uses the cached policy without fetching.
	wantMode(t, lookup(t, f.store(t, nil)), smtpclient.STSEnforce, "")
	if n := f.srv.hits.Load(); n != 1 {
		t.Fatalf("%d fetches, want 1 (cached in KV)", n)
	}
}

func TestStoreRefetchesOnNewID(t *testing.T) {
	f := newFixture(t, enforceBody)
	s := f.store(t, nil)
	wantMode(t, lookup(t, s), smtpclient.STSEnforce, "")
	f.srv.set(http.StatusOK, "version: STSv1\nmode: testing\nmx: mx.example.com\nmax_age: 86400\n")
	f.zone.SetTXTRecords("_mta-sts.example.com", "v=STSv1; id=2")
	wantMode(t, lookup(t, s), smtpclient.STSTesting, "")
	if n := f.srv.hits.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2", n)
	}
}

func TestStoreRefreshNearExpiry(t *testing.T) {
	f := newFixture(t, enforceBody)
	s := f.store(t, nil)
	wantMode(t, lookup(t, s), smtpclient.STSEnforce, "")
	f.advance(13 * time.Hour) // past max_age - min(max_age/2, 1 day)
	wantMode(t, lookup(t, s), smtpclient.STSEnforce, "")
	if n := f.srv.hits.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2 (refreshed before expiry)", n)
	}
}

func TestStoreKeepsCachedPolicyWhenFetchFails(t *testing.T) {
	f := newFixture(t, enforceBody)
	s := f.store(t, nil)
	wantMode(t, lookup(t, s), smtpclient.STSEnforce, "")
	f.srv.set(http.StatusInternalServerError, "")
	f.zone.SetTXTRecords("_mta-sts.example.com", "v=STSv1; id=2")
	wantMode(t, lookup(t, s), smtpclient.STSEnforce, smtpclient.FailSTSFetch)
	f.advance(25 * time.Hour) // past max_age: the cached policy is gone
	wantMode(t, lookup(t, s), "", smtpclient.FailSTSFetch)
}

func TestStoreFailsOpen(t *testing.T) {
	cases := []struct {
		name    string
		prepare func(f *fixture)
		guard   *netguard.Guard
		failure string
	}{
		{"http error", func(f *fixture) { f.srv.set(http.StatusNotFound, "") }, nil, smtpclient.FailSTSFetch},
		{"redirect", func(f *fixture) { f.srv.set(http.StatusFound, "") }, nil, smtpclient.FailSTSFetch},
		{"invalid", func(f *fixture) { f.srv.set(http.StatusOK, "version: STSv1\nmode: enforce\n") }, nil,
			smtpclient.FailSTSInvalid},
		{"too big", func(f *fixture) { f.srv.set(http.StatusOK, enforceBody+string(make([]byte, MaxPolicySize))) },
			nil, smtpclient.FailSTSInvalid},
		{"denied network", nil, netguard.New([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, nil),
			smtpclient.FailSTSFetch},
		{"no record", func(f *fixture) { f.zone.SetTXTRecords("_mta-sts.example.com", "v=spf1 -all") }, nil, ""},
		{"two records", func(f *fixture) {
			f.zone.SetTXTRecords("_mta-sts.example.com", "v=STSv1; id=1", "v=STSv1; id=2")
		}, nil, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t, enforceBody)
			if c.prepare != nil {
				c.prepare(f)
			}
			wantMode(t, lookup(t, f.store(t, c.guard)), "", c.failure)
		})
	}
}

func TestStoreWebPKI(t *testing.T) {
	f := newFixture(t, enforceBody)
	other := startPolicyServer(t, relaytest.SelfSigned(t, "mta-sts.example.com"), enforceBody)
	f.srv.port = other.port
	wantMode(t, lookup(t, f.store(t, nil)), "", smtpclient.FailSTSWebPKI)
	if n := other.hits.Load(); n != 0 {
		t.Fatalf("self-signed server answered %d requests", n)
	}
}
