package tlsrpt_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/dkim"
	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/dnsclient"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/mtasts"
	"github.com/jetrelay/jetrelay/relay/relaytest"
	"github.com/jetrelay/jetrelay/relay/tlsrpt"
	"github.com/nats-io/nats.go/jetstream"
)

// recordingQueue enqueues into the real queue and keeps what it queued.
type recordingQueue struct {
	q    *queue.Queue
	mu   sync.Mutex
	msgs []*queue.Message
}

func (r *recordingQueue) Enqueue(ctx context.Context, m *queue.Message) error {
	if err := r.q.Enqueue(ctx, m); err != nil {
		return err
	}
	r.mu.Lock()
	r.msgs = append(r.msgs, m)
	r.mu.Unlock()
	return nil
}

// ruaServer is an https rua endpoint (RFC 8460 §5.4) on loopback.
type ruaServer struct {
	mu    sync.Mutex
	posts [][]byte
	types []string
	port  int
}

func startRUA(t *testing.T, cert tls.Certificate) *ruaServer {
	s := &ruaServer{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		s.mu.Lock()
		s.posts, s.types = append(s.posts, b), append(s.types, r.Header.Get("Content-Type"))
		s.mu.Unlock()
		w.WriteHeader(http.StatusCreated)
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

func testSigner(t *testing.T, domain string) *dkim.Signer {
	t.Helper()
	key, err := dkim.GenerateKey(dkim.Ed25519, 0)
	if err != nil {
		t.Fatal(err)
	}
	pem, err := dkim.MarshalKey(key)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(file, pem, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := dkim.NewSigner([]dkim.KeySpec{{Domain: domain, Selector: "s1", KeyFile: file, Sign: true}}, dkim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The day's counts become one RFC 8460 report per domain, even with two
// nodes' reporters running at once: by mail (the §5.3 message, DKIM-signed,
// queued with TLSReport and NOTIFY=NEVER) and by https POST; the report
// parses back and follows RFC 8460's schema, with the cached MTA-STS
// policy as its policy-string. A domain without a _smtp._tls record gets
// none; a second run sends nothing again.
func TestReporterOneReportPerDomainPerDay(t *testing.T) {
	t.Parallel()
	q, kv := openState(t)
	ca := relaytest.NewCA(t)
	rua := startRUA(t, ca.Cert(t, "rua.test"))
	zone := relaytest.NewZone()
	zone.AddTXTRecords("_smtp._tls.rpt.test", fmt.Sprintf("v=TLSRPTv1; rua=mailto:tls@rua.test,https://rua.test:%d/r", rua.port))
	zone.AddTXTRecords("_smtp._tls.other.test", "v=TLSRPTv1; rua=mailto:x@rua.test", "v=TLSRPTv1; rua=mailto:y@rua.test")
	zone.AddA("rua.test", "127.0.0.1")
	dnsAddr := relaytest.FakeDNS(t, zone)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	stsKV, err := mtasts.OpenBucket(ctx, q.JetStream(), 1)
	if err != nil {
		t.Fatal(err)
	}
	policy := `{"id":"1","policy":{"mode":"enforce","mx":["mx1.rpt.test"],"max_age":86400},"fetched":"2026-01-01T00:00:00Z"}`
	if _, err := stsKV.Put(ctx, "rpt.test", []byte(policy)); err != nil {
		t.Fatal(err)
	}
	yesterday := time.Now().UTC().Truncate(24 * time.Hour).Add(-time.Hour)
	seedCounts(t, q, kv, yesterday)
	rq := &recordingQueue{q: q}
	signer := testSigner(t, "relay.test")
	var wg sync.WaitGroup
	var reporters []*tlsrpt.Reporter
	for i := 0; i < 2; i++ {
		r, err := tlsrpt.NewReporter(tlsrpt.ReporterOptions{KV: kv, STS: stsKV, Queue: rq, Signer: signer,
			DNS: dnsclient.Options{Servers: []string{dnsAddr}, Timeout: 2 * time.Second}, Roots: ca.Pool,
			From: "tlsrpt@relay.test", OrgName: "Test Org", Node: fmt.Sprint("node", i), Logger: relaytest.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		reporters = append(reporters, r)
		wg.Add(1)
		go func() {
			defer wg.Done()
			end := yesterday.Truncate(24 * time.Hour).Add(24*time.Hour - time.Second)
			if _, err := r.SendDay(ctx, yesterday, end); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if len(rq.msgs) != 1 || len(rua.posts) != 1 {
		t.Fatalf("%d reports by mail and %d by https, want one each", len(rq.msgs), len(rua.posts))
	}
	checkQueued(t, rq.msgs[0])
	hdr, rep := relaytest.TLSReportMail(t, rq.msgs[0].Body)
	if hdr.Get("TLS-Report-Domain") != "rpt.test" || hdr.Get("TLS-Report-Submission") != "relay.test" ||
		!strings.Contains(hdr.Get("DKIM-Signature"), "d=relay.test") {
		t.Fatalf("report header: %v", hdr)
	}
	checkReport(t, rep, yesterday)
	if rua.types[0] != tlsrpt.MediaType {
		t.Fatalf("POST Content-Type %q", rua.types[0])
	}
	checkReport(t, relaytest.GunzipTLSReport(t, rua.posts[0]), yesterday)
	sent, err := reporters[0].SendDay(ctx, yesterday, yesterday)
	if err != nil || sent.Reported != 0 || sent.Skipped != 2 || len(rq.msgs) != 1 || len(rua.posts) != 1 {
		t.Fatalf("second run: %+v %v; %d mails, %d posts", sent, err, len(rq.msgs), len(rua.posts))
	}
}

// seedCounts counts yesterday's sessions of rpt.test and other.test
// through the Counter, as the events stream would have them.
func seedCounts(t *testing.T, q *queue.Queue, kv jetstream.KeyValue, day time.Time) {
	t.Helper()
	startCounter(t, q, kv)
	var evs []*events.Event
	for i := 0; i < 5; i++ {
		evs = append(evs, delivery("rpt.test", "mta-sts", "TLS1.3", "", "mx1.rpt.test", "127.0.0.2", "s1"))
	}
	evs = append(evs, delivery("rpt.test", "mta-sts", "failed", "certificate-not-trusted", "mx1.rpt.test", "127.0.0.2", "s1"),
		delivery("other.test", "opportunistic", "TLS1.3", "", "mx1.other.test", "127.0.0.3", ""))
	for _, e := range evs {
		e.Time = day
	}
	publish(t, q, evs...)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	relaytest.Eventually(t, "counted", func() bool {
		got, err := tlsrpt.Read(ctx, kv, tlsrpt.Day(day), "")
		return err == nil && total(got) == 7
	})
}

func checkQueued(t *testing.T, m *queue.Message) {
	t.Helper()
	if len(m.Entries) != 1 {
		t.Fatalf("%d entries", len(m.Entries))
	}
	e := m.Entries[0]
	if !e.TLSReport || e.From != "tlsrpt@relay.test" || e.Domain != "rua.test" || len(e.Rcpts) != 1 ||
		e.Rcpts[0].Addr != "tls@rua.test" || strings.Join(e.Rcpts[0].Notify, ",") != "NEVER" {
		t.Fatalf("queued envelope %+v", e)
	}
}

func checkReport(t *testing.T, rep map[string]any, day time.Time) {
	t.Helper()
	b, _ := json.Marshal(rep)
	var r tlsrpt.Report
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	start := day.Truncate(24 * time.Hour).Format(time.RFC3339)
	end := day.Truncate(24 * time.Hour).Add(24*time.Hour - time.Second).Format(time.RFC3339)
	if r.OrganizationName != "Test Org" || r.ContactInfo != "tlsrpt@relay.test" || r.DateRange.Start != start ||
		r.DateRange.End != end || len(r.Policies) != 1 {
		t.Fatalf("report %s", b)
	}
	p := r.Policies[0]
	want := "version: STSv1|mode: enforce|mx: mx1.rpt.test|max_age: 86400"
	if p.Policy.Type != "sts" || p.Policy.Domain != "rpt.test" || strings.Join(p.Policy.String, "|") != want ||
		strings.Join(p.Policy.MXHost, ",") != "mx1.rpt.test" || p.Summary.Successful != 5 || p.Summary.Failed != 1 {
		t.Fatalf("policy %s", b)
	}
	if len(p.FailureDetails) != 1 || p.FailureDetails[0] != (tlsrpt.FailureDetail{ResultType: "certificate-not-trusted",
		SendingIP: "192.0.2.1", ReceivingMX: "mx1.rpt.test", ReceivingIP: "127.0.0.2", Count: 1}) {
		t.Fatalf("failure details %s", b)
	}
}
