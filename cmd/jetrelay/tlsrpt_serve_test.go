package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/relaytest"
	"github.com/jetrelay/jetrelay/relay/tlsrpt"
	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"
)

// The running relay counts its TLS sessions (delivery.tls_rpt on by
// default): a message delivered over STARTTLS to a domain without MTA-STS
// or DANE shows up in `tlsrpt show` as a successful no-policy-found
// session, through the events stream and the shared consumer.
func TestServeCountsTLSSessions(t *testing.T) {
	t.Parallel()
	zone := relaytest.NewZone()
	dnsAddr := relaytest.FakeDNS(t, zone)
	cert := relaytest.SelfSigned(t, "mx.tls.example")
	mx := relaytest.FakeMX(t, relaytest.StartTLS(&cert))
	zone.AddMX("tls.example", 10, "mx.tls.example")
	zone.AddA("mx.tls.example", mx.IP)
	dir := t.TempDir()
	r := &inProcRelay{cfgPath: filepath.Join(dir, "jetrelay.yaml"), subAddr: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		dataDir: filepath.Join(dir, "data"), user: "app", passFile: filepath.Join(dir, "app.password"), mx: mx}
	hash, err := bcrypt.GenerateFromPassword([]byte("app-pass-1"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	yaml := fmt.Sprintf(`hostname: relay.test
data_dir: %s
nats: {listen: "127.0.0.1:%d"}
submission:
  listeners: [{addr: "%s", tls: starttls}]
  users: [{name: app, password_hash: "%s", allowed_from: [example.com]}]
delivery:
  port: %d
  allowed_networks: ["127.0.0.0/8"]
  dns: {servers: ["%s"], timeout: 1s}
admin: {listen: ""}
`, r.dataDir, freePort(t), r.subAddr, hash, mx.Port, dnsAddr)
	for path, data := range map[string]string{r.cfgPath: yaml, r.passFile: "app-pass-1\n"} {
		if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := config.Load(r.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, cfg, zerolog.New(zerolog.NewTestWriter(t)), stdio{out: os.Stderr, err: os.Stderr})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			t.Error("serve did not stop")
		}
	})
	queuetest.Eventually(t, 60*time.Second, "submission listening", func() bool {
		c, err := net.DialTimeout("tcp", r.subAddr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	if rc, out, errOut := r.send(t, "--to", "ok@tls.example"); rc != 0 {
		t.Fatalf("send: rc %d\n%s%s", rc, out, errOut)
	}
	var shown struct {
		Domains []*tlsrpt.DomainCounts `json:"domains"`
	}
	queuetest.Eventually(t, 60*time.Second, "session counted", func() bool {
		rc, out, _ := runOps(t, tlsrptShowMain, "--config", r.cfgPath, "--json")
		return rc == 0 && json.Unmarshal([]byte(out), &shown) == nil && len(shown.Domains) == 1
	})
	d := shown.Domains[0]
	if d.Domain != "tls.example" || len(d.Policies) != 1 || d.Policies[0].Type != tlsrpt.TypeNoPolicy ||
		d.Policies[0].Success != 1 || d.Policies[0].Failed() != 0 {
		t.Fatalf("counted %+v", d.Policies)
	}
}
