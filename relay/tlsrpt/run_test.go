package tlsrpt_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/relay/dnsclient"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/netguard"
	"github.com/jetrelay/jetrelay/relay/relaytest"
	"github.com/jetrelay/jetrelay/relay/tlsrpt"
)

// httpsOnly sets up yesterday's counts of rpt.test and other.test, with
// rpt.test publishing only an https rua on a loopback server.
func httpsOnly(t *testing.T) (tlsrpt.ReporterOptions, *ruaServer) {
	t.Helper()
	q, kv := openState(t)
	ca := relaytest.NewCA(t)
	rua := startRUA(t, ca.Cert(t, "rua.test"))
	zone := relaytest.NewZone()
	zone.AddTXTRecords("_smtp._tls.rpt.test", fmt.Sprintf("v=TLSRPTv1; rua=https://rua.test:%d/r", rua.port))
	zone.AddA("rua.test", "127.0.0.1")
	dnsAddr := relaytest.FakeDNS(t, zone)
	seedCounts(t, q, kv, time.Now().UTC().Truncate(24*time.Hour).Add(-time.Hour))
	return tlsrpt.ReporterOptions{KV: kv, DNS: dnsclient.Options{Servers: []string{dnsAddr}, Timeout: 2 * time.Second},
		Roots: ca.Pool, From: "tlsrpt@relay.test", Logger: relaytest.Logger(t)}, rua
}

// Run reports yesterday at once when it starts (a restart or a node that
// was down at midnight catches up), then waits for the next night.
func TestReporterRunCatchesUp(t *testing.T) {
	t.Parallel()
	o, rua := httpsOnly(t)
	r, err := tlsrpt.NewReporter(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	relaytest.Eventually(t, "yesterday's report posted", func() bool {
		rua.mu.Lock()
		defer rua.mu.Unlock()
		return len(rua.posts) == 1
	})
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(wait):
		t.Fatal("Run did not stop")
	}
	relaytest.GunzipTLSReport(t, rua.posts[0])
}

// An https endpoint in delivery.denied_networks is not dialled: the report
// fails (and is logged) without a connection.
func TestReporterHTTPSObeysDeniedNetworks(t *testing.T) {
	t.Parallel()
	o, rua := httpsOnly(t)
	g, err := netguard.Parse([]string{"127.0.0.0/8"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	o.Guard = g
	r, err := tlsrpt.NewReporter(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	day := time.Now().UTC().Truncate(24 * time.Hour).Add(-time.Second)
	sent, err := r.SendDay(ctx, day, day)
	if err != nil || sent.Failed != 1 || sent.Reported != 0 || len(rua.posts) != 0 {
		t.Fatalf("%+v %v; %d posts", sent, err, len(rua.posts))
	}
}

// A DANE domain's report has one tlsa policy per MX host, with that
// host's TLSA records as the policy-string (RFC 8460 §4.3.1.2).
func TestReportTLSAPolicy(t *testing.T) {
	t.Parallel()
	q, kv := openState(t)
	ca := relaytest.NewCA(t)
	rua := startRUA(t, ca.Cert(t, "rua.test"))
	zone := relaytest.NewZone()
	zone.AddTXTRecords("_smtp._tls.dane.test", fmt.Sprintf("v=TLSRPTv1; rua=https://rua.test:%d/r", rua.port))
	zone.AddA("rua.test", "127.0.0.1")
	zone.AddTLSA("_25._tcp.mx1.dane.test", 3, 1, 1, []byte{0xab, 0xcd})
	dnsAddr := relaytest.FakeDNS(t, zone)
	startCounter(t, q, kv)
	day := time.Now().UTC().Truncate(24 * time.Hour).Add(-time.Hour)
	evs := []*events.Event{delivery("dane.test", "dane", "TLS1.3", "", "mx1.dane.test", "127.0.0.2", ""),
		delivery("dane.test", "dane", "failed", "tlsa-invalid", "mx1.dane.test", "127.0.0.2", "")}
	for _, e := range evs {
		e.Time = day
	}
	publish(t, q, evs...)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	relaytest.Eventually(t, "counted", func() bool {
		got, err := tlsrpt.Read(ctx, kv, tlsrpt.Day(day), "dane.test")
		return err == nil && total(got) == 2
	})
	r, err := tlsrpt.NewReporter(tlsrpt.ReporterOptions{KV: kv, DNS: dnsclient.Options{Servers: []string{dnsAddr},
		Timeout: 2 * time.Second}, Roots: ca.Pool, From: "tlsrpt@relay.test", Logger: relaytest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if sent, err := r.SendDay(ctx, day, day); err != nil || sent.Reported != 1 {
		t.Fatalf("%+v %v", sent, err)
	}
	rep := relaytest.GunzipTLSReport(t, rua.posts[0])
	pol := rep["policies"].([]any)[0].(map[string]any)
	desc := pol["policy"].(map[string]any)
	if desc["policy-type"] != "tlsa" || fmt.Sprint(desc["policy-string"]) != "[3 1 1 abcd]" ||
		fmt.Sprint(desc["mx-host"]) != "[mx1.dane.test]" || fmt.Sprint(pol["summary"]) !=
		"map[total-failure-session-count:1 total-successful-session-count:1]" {
		t.Fatalf("tlsa policy %v", pol)
	}
}
