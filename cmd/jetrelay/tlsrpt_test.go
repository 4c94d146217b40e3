package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/dkim"
	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/relaytest"
	"github.com/jetrelay/jetrelay/relay/tlsrpt"
)

// tlsrptEnv is an ops env with a TLS-RPT counter running on its NATS, as
// a relay's would, a DKIM key for relay.test and rpt.test publishing a
// _smtp._tls record with a mailto: address.
func tlsrptEnv(t *testing.T) *opsEnv {
	t.Helper()
	o := newOpsEnv(t)
	zone := relaytest.NewZone()
	zone.AddTXTRecords("_smtp._tls.rpt.test", "v=TLSRPTv1; rua=mailto:tls@rua.test")
	dnsAddr := relaytest.FakeDNS(t, zone)
	key, err := dkim.GenerateKey(dkim.Ed25519, 0)
	if err != nil {
		t.Fatal(err)
	}
	pem, _ := dkim.MarshalKey(key)
	keyFile := filepath.Join(o.dataDir, "dkim.pem")
	if err := os.WriteFile(keyFile, pem, 0o600); err != nil {
		t.Fatal(err)
	}
	yaml := "hostname: relay.test\ndata_dir: " + o.dataDir + "\ndelivery:\n  dns: {servers: [\"" + dnsAddr + "\"]}\n" +
		"  tls_rpt: {from: tlsrpt@relay.test, org_name: Test}\n" +
		"dkim:\n  keys: [{domain: relay.test, selector: s1, key: " + keyFile + "}]\n"
	if err := os.WriteFile(o.cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := tlsrpt.OpenBucket(ctx, o.q.JetStream(), 1)
	if err != nil {
		t.Fatal(err)
	}
	co := tlsrptCounterOptions(config.Default(), o.q.JetStream(), kv, relaytest.Logger(t))
	co.Flush = 100 * time.Millisecond
	c, err := tlsrpt.NewCounter(ctx, co)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = c.Run(runCtx); close(done) }()
	t.Cleanup(func() { stop(); <-done })
	return o
}

// `tlsrpt show` prints today's counters (text, --domain, --json) as the
// counter stored them; `tlsrpt send` needs --now, and then sends one
// report per domain per day, through the queue.
func TestTLSRPTShowAndSend(t *testing.T) {
	t.Parallel()
	o := tlsrptEnv(t)
	for i := 0; i < 3; i++ {
		o.em.Emit(&events.Event{Event: events.Delivery, QueueID: queue.NewID(), Domain: "rpt.test", MX: "mx1.rpt.test",
			IP: "127.0.0.2", TLS: "TLS1.3", TLSPolicy: "mta-sts", Status: events.StatusDelivered})
	}
	o.em.Emit(&events.Event{Event: events.Delivery, QueueID: queue.NewID(), Domain: "rpt.test", MX: "mx1.rpt.test",
		IP: "127.0.0.2", TLS: "failed", TLSPolicy: "mta-sts", TLSFailure: "certificate-expired", Status: events.StatusDeferred})
	o.em.Emit(&events.Event{Event: events.Delivery, QueueID: queue.NewID(), Domain: "quiet.test", TLS: "TLS1.2",
		TLSPolicy: "opportunistic", Status: events.StatusDelivered})
	var shown struct {
		Day     string                 `json:"day"`
		Domains []*tlsrpt.DomainCounts `json:"domains"`
	}
	relaytest.Eventually(t, "counted", func() bool {
		rc, out, errOut := runOps(t, tlsrptShowMain, o.args("--json")...)
		if rc != 0 {
			t.Fatalf("tlsrpt show --json: rc %d: %s", rc, errOut)
		}
		if err := json.Unmarshal([]byte(out), &shown); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		return len(shown.Domains) == 2 && shown.Domains[1].Policies[0].Success == 3 &&
			shown.Domains[1].Policies[0].Failed() == 1
	})
	if shown.Day != tlsrpt.Day(time.Now()) || shown.Domains[0].Domain != "quiet.test" {
		t.Fatalf("show --json: %+v", shown)
	}
	rc, out, _ := runOps(t, tlsrptShowMain, o.args("--domain", "rpt.test")...)
	if rc != 0 || !strings.Contains(out, "rpt.test  sts") || !strings.Contains(out, "certificate-expired") ||
		strings.Contains(out, "quiet.test") {
		t.Fatalf("show --domain rpt.test: rc %d\n%s", rc, out)
	}
	if rc, _, _ := runOps(t, tlsrptSendMain, o.args()...); rc != 2 {
		t.Fatalf("send without --now: rc %d, want 2", rc)
	}
	before := queuetest.StreamMsgs(t, o.q)
	rc, out, errOut := runOps(t, tlsrptSendMain, o.args("--now")...)
	if rc != 0 || !strings.Contains(out, "2 domains counted today: 1 reports sent, 1 skipped") {
		t.Fatalf("send --now: rc %d\n%s%s", rc, out, errOut)
	}
	if n := queuetest.StreamMsgs(t, o.q); n != before+1 {
		t.Fatalf("queue holds %d new messages, want the one report", n-before)
	}
	rc, out, _ = runOps(t, tlsrptSendMain, o.args("--now")...)
	if rc != 0 || !strings.Contains(out, "0 reports sent, 2 skipped") {
		t.Fatalf("second send --now: rc %d\n%s", rc, out)
	}
}
