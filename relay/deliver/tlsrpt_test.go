package deliver_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/dkim"
	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/dnsclient"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/relaytest"
	"github.com/jetrelay/jetrelay/relay/tlsrpt"
	"github.com/nats-io/nats.go/jetstream"
)

// RFC 8460 §3: a TLS-RPT report is delivered even when the TLS policy it
// reports on fails. rua.test publishes an MTA-STS enforce policy its MX
// (self-signed certificate) does not meet: ordinary mail is deferred with
// 4.7.5, while the report, queued by the Reporter with TLSReport set,
// reaches that MX over opportunistic TLS, DKIM-signed, and parses back as
// an RFC 8460 report.
func TestTLSReportDeliveredDespiteFailingPolicy(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ca := relaytest.NewCA(t)
	srv := startSTSServer(t, ca.Cert(t, "mta-sts.rua.test"))
	cert := relaytest.SelfSigned(t, "mx1.rua.test")
	m := h.mx(relaytest.StartTLS(&cert))
	h.domain("rua.test", m.IP)
	h.zone.AddTXTRecords("_mta-sts.rua.test", "v=STSv1; id=1")
	h.zone.AddA("mta-sts.rua.test", "127.0.0.1")
	srv.set("rua.test", stsPolicy("enforce", "mx1.rua.test"))
	h.zone.AddTXTRecords("_smtp._tls.pol.test", "v=TLSRPTv1; rua=mailto:tls@rua.test")
	cfg := h.config()
	cfg.Delivery.TLS.CAFile = ca.File
	cfg.Delivery.MTASTS.HTTPSPort = srv.port
	h.stsKV = openSTSBucket(t, h)
	h.start(cfg)
	id := h.send([]string{"x@rua.test"})
	checkTLSCase(t, h, m, "x@rua.test", id, "deferred:4.7.5")

	kv := seedTLSRPT(t, h, "pol.test")
	r, err := tlsrpt.NewReporter(tlsrpt.ReporterOptions{KV: kv, Queue: h.q, Signer: reportSigner(t, "relay.test"),
		DNS: dnsclient.Options{Servers: cfg.Delivery.DNS.Servers, Timeout: 2 * time.Second}, From: "tlsrpt@relay.test",
		Logger: relaytest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	day := time.Now().UTC().Truncate(24 * time.Hour).Add(-time.Second)
	if sent, err := r.SendDay(ctx, day, day); err != nil || sent.Reported != 1 {
		t.Fatalf("SendDay: %+v %v", sent, err)
	}
	relaytest.Eventually(t, "report delivered", func() bool { return m.Received("tls@rua.test") == 1 })
	var msg relaytest.Message
	for _, mm := range m.Messages() {
		if mm.Rcpts[0] == "tls@rua.test" {
			msg = mm
		}
	}
	if msg.TLS == nil || msg.From != "tlsrpt@relay.test" {
		t.Fatalf("report received TLS=%v from %q; want opportunistic TLS from tlsrpt@relay.test", msg.TLS != nil, msg.From)
	}
	hdr, _ := relaytest.TLSReportMail(t, msg.Body)
	if hdr.Get("DKIM-Signature") == "" || hdr.Get("TLS-Report-Domain") != "pol.test" {
		t.Fatalf("report header %v", hdr)
	}
	if ev := h.deliveries("tls@rua.test", events.StatusDelivered)[0]; ev.TLSPolicy != "opportunistic" {
		t.Fatalf("report delivered with tls_policy %q", ev.TLSPolicy)
	}
	if m.Received("x@rua.test") != 0 || !h.stored(id) {
		t.Fatal("the ordinary mail was delivered in breach of the policy, or lost")
	}
}

// seedTLSRPT counts one failed session of domain yesterday through the
// Counter and returns the bucket.
func seedTLSRPT(t *testing.T, h *harness, domain string) jetstream.KeyValue {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := events.EnsureStream(ctx, h.q.JetStream(), events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	kv, err := tlsrpt.OpenBucket(ctx, h.q.JetStream(), 1)
	if err != nil {
		t.Fatal(err)
	}
	cctx, stop := context.WithCancel(context.Background())
	c, err := tlsrpt.NewCounter(cctx, tlsrpt.CounterOptions{JetStream: h.q.JetStream(), KV: kv,
		Flush: 100 * time.Millisecond, Logger: relaytest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = c.Run(cctx); close(done) }()
	t.Cleanup(func() { stop(); <-done })
	day := time.Now().UTC().Truncate(24 * time.Hour).Add(-time.Hour)
	e := &events.Event{Time: day, Event: events.Delivery, QueueID: queue.NewID(), Domain: domain, TLSPolicy: "mta-sts",
		TLS: "failed", TLSFailure: "certificate-expired", MX: "mx1." + domain, IP: "127.0.0.9", Status: events.StatusDeferred}
	b, _ := json.Marshal(e)
	if _, err := h.q.JetStream().Publish(ctx, events.Subject(e), b); err != nil {
		t.Fatal(err)
	}
	relaytest.Eventually(t, "session counted", func() bool {
		got, err := tlsrpt.Read(ctx, kv, tlsrpt.Day(day), domain)
		return err == nil && len(got) == 1
	})
	return kv
}

func reportSigner(t *testing.T, domain string) *dkim.Signer {
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
