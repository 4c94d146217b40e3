package tlsrpt_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/relaytest"
	"github.com/jetrelay/jetrelay/relay/tlsrpt"
	"github.com/nats-io/nats.go/jetstream"
)

const wait = 30 * time.Second

// openState starts JetStream with the events stream and the bucket.
func openState(t *testing.T) (*queue.Queue, jetstream.KeyValue) {
	t.Helper()
	q := queuetest.RunJetStream(t, queuetest.Options{Listen: "127.0.0.1:0"})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := events.EnsureStream(ctx, q.JetStream(), events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	kv, err := tlsrpt.OpenBucket(ctx, q.JetStream(), 1)
	if err != nil {
		t.Fatal(err)
	}
	return q, kv
}

// startCounter runs a Counter (one node's) until the test ends.
func startCounter(t *testing.T, q *queue.Queue, kv jetstream.KeyValue) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c, err := tlsrpt.NewCounter(ctx, tlsrpt.CounterOptions{JetStream: q.JetStream(), KV: kv,
		Flush: 100 * time.Millisecond, SourceIPs: map[string]string{"s1": "192.0.2.1"}, DefaultIP: "192.0.2.9",
		Logger: relaytest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func publish(t *testing.T, q *queue.Queue, evs ...*events.Event) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	for _, e := range evs {
		if e.QueueID == "" {
			e.QueueID = queue.NewID()
		}
		b, _ := json.Marshal(e)
		if _, err := q.JetStream().Publish(ctx, events.Subject(e), b); err != nil {
			t.Fatal(err)
		}
	}
}

func delivery(domain, policy, tls, failure, mx, ip, source string) *events.Event {
	return &events.Event{Time: time.Now().UTC(), Event: events.Delivery, Domain: domain, TLSPolicy: policy, TLS: tls,
		TLSFailure: failure, MX: mx, IP: ip, Source: source, Status: events.StatusDelivered}
}

// Two nodes' counters share one durable consumer: every delivery event is
// counted exactly once into the day's KV keys, per domain and policy;
// plaintext sessions without a failure and other event kinds are not
// sessions.
func TestCounterCountsSessionsOnceAcrossNodes(t *testing.T) {
	t.Parallel()
	q, kv := openState(t)
	startCounter(t, q, kv)
	q2 := queuetest.OpenQueue(t, q.ClientURL(), 1, relaytest.Logger(t), queue.PublishOptions{}) // a second node
	startCounter(t, q2, kv)
	var evs []*events.Event
	for i := 0; i < 30; i++ {
		evs = append(evs, delivery("a.test", "mta-sts", "TLS1.3", "", "mx1.a.test", "127.0.0.2", "s1"))
	}
	for i := 0; i < 4; i++ {
		evs = append(evs, delivery("a.test", "mta-sts", "failed", "certificate-expired", "mx1.a.test", "127.0.0.2", "s1"))
	}
	evs = append(evs,
		delivery("A.Test.", "mta-sts-testing", "none", "starttls-not-supported", "mx2.a.test", "127.0.0.3", ""),
		delivery("b.test", "dane", "TLS1.3", "", "mx1.b.test", "127.0.0.4", "s1"),
		delivery("b.test", "dane", "failed", "validation-failure", "mx1.b.test", "127.0.0.4", "s1"),
		delivery("b.test", "opportunistic", "TLS1.2", "", "mx1.b.test", "127.0.0.4", "s1"),
		delivery("c.test", "opportunistic", "none", "", "mx1.c.test", "127.0.0.5", ""), // plaintext: no session
		delivery("bücher.test", "opportunistic", "TLS1.3", "", "mx1.xn--bcher-kva.test", "127.0.0.6", ""),
		&events.Event{Event: events.Accepted, Domain: "a.test", TLS: "TLS1.3"},
	)
	publish(t, q, evs...)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	day := tlsrpt.Day(time.Now())
	var got []*tlsrpt.DomainCounts
	relaytest.Eventually(t, "every session counted", func() bool {
		var err error
		got, err = tlsrpt.Read(ctx, kv, day, "")
		if err != nil {
			t.Fatal(err)
		}
		return total(got) >= 39
	})
	if n := total(got); n != 39 || len(got) != 3 || got[2].Domain != "xn--bcher-kva.test" {
		t.Fatalf("counted %d sessions in %d domains, want 39 in 3 (a.test, b.test, xn--bcher-kva.test)", n, len(got))
	}
	a, b := got[0], got[1]
	sts := policyOf(t, a, tlsrpt.TypeSTS, "")
	if sts.Success != 30 || sts.Failed() != 5 || len(sts.Failures) != 2 {
		t.Fatalf("a.test sts: %+v", sts)
	}
	if f := sts.Failures[0]; f.Result != "certificate-expired" || f.Count != 4 || f.SendingIP != "192.0.2.1" ||
		f.ReceivingMX != "mx1.a.test" || f.ReceivingIP != "127.0.0.2" {
		t.Fatalf("a.test failure row %+v", f)
	}
	if f := sts.Failures[1]; f.SendingIP != "192.0.2.9" || f.Result != "starttls-not-supported" {
		t.Fatalf("a.test failure row without a source: %+v", f)
	}
	if p := policyOf(t, b, tlsrpt.TypeTLSA, "mx1.b.test"); p.Success != 1 || p.Failed() != 1 {
		t.Fatalf("b.test tlsa: %+v", p)
	}
	if p := policyOf(t, b, tlsrpt.TypeNoPolicy, ""); p.Success != 1 || p.Failed() != 0 {
		t.Fatalf("b.test no-policy-found: %+v", p)
	}
}

func total(ds []*tlsrpt.DomainCounts) int64 {
	var n int64
	for _, d := range ds {
		for _, p := range d.Policies {
			n += p.Success + p.Failed()
		}
	}
	return n
}

func policyOf(t *testing.T, d *tlsrpt.DomainCounts, typ, mx string) *tlsrpt.PolicyCount {
	t.Helper()
	for _, p := range d.Policies {
		if p.Type == typ && p.MXHost == mx {
			return p
		}
	}
	t.Fatalf("%s: no %s policy (mx %q) in %+v", d.Domain, typ, mx, d.Policies)
	return nil
}
