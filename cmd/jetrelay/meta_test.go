package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	msgauth "github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/jetrelay/jetrelay/dkim"
	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/relaytest"
	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"
)

// TestMetaEndToEnd (issue 18, point 3): `jetrelay serve` in this process
// with a DKIM key. A message with X-Jetrelay-Meta-* and X-Jetrelay-Tag
// fields reaches the fake MX without them and with a signature that
// verifies; its accepted and delivery events carry the metadata, and
// `logs --meta` finds them (with --json and without), every pair
// required.
func TestMetaEndToEnd(t *testing.T) {
	zone := relaytest.NewZone()
	dnsAddr := relaytest.FakeDNS(t, zone)
	mx := relaytest.FakeMX(t)
	zone.AddMX("live.example", 10, "mx.live.example")
	zone.AddA("mx.live.example", mx.IP)
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "example.com.pem")
	zone.AddLine(t, writeDKIMKey(t, keyFile))
	cfgPath, subAddr := writeMetaConfig(t, dir, dnsAddr, mx.Port, keyFile)
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	logs := &syncBuffer{}
	go func() { done <- serve(ctx, cfg, zerolog.New(logs), stdio{out: logs, err: logs}) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			t.Error("serve did not stop")
		}
	})
	queuetest.Eventually(t, 60*time.Second, "submission listening", func() bool {
		c, err := net.DialTimeout("tcp", subAddr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	msg := "From: <app@example.com>\r\nTo: <rcpt@live.example>\r\nSubject: receipt\r\n" +
		"X-Jetrelay-Meta-Order: 1234\r\nX-Jetrelay-Meta-Shop: eu\r\nX-Jetrelay-Tag: receipt\r\n\r\nThanks.\r\n"
	submitMeta(t, subAddr, msg)
	queuetest.Eventually(t, 60*time.Second, "message at the MX", func() bool { return len(mx.Messages()) == 1 })
	got := mx.Messages()[0].Body
	if bytes.Contains(bytes.ToLower(got), []byte("x-jetrelay")) || !bytes.HasSuffix(got, []byte("\r\n\r\nThanks.\r\n")) {
		t.Fatalf("delivered message:\n%s", got)
	}
	vs, err := msgauth.VerifyWithOptions(bytes.NewReader(got), &msgauth.VerifyOptions{LookupTXT: zone.LookupTXT})
	if err != nil || len(vs) != 1 || vs[0].Err != nil {
		t.Fatalf("DKIM of the delivered message: %v %+v", err, vs)
	}

	base := []string{"--config", cfgPath, "--meta", "order=1234", "--meta", "Shop=eu"}
	var evs []events.Event
	queuetest.Eventually(t, 60*time.Second, "accepted and delivered events", func() bool {
		rc, out, errOut := runOps(t, logsMain, append(base, "--json")...)
		if rc != 0 {
			t.Fatalf("logs --meta: rc %d: %s", rc, errOut)
		}
		evs = parseEvents(t, out)
		return len(evs) == 2
	})
	for _, e := range evs {
		if e.Meta["order"] != "1234" || e.Meta["shop"] != "eu" || e.Tag != "receipt" {
			t.Fatalf("event without the metadata: %+v", e)
		}
	}
	if evs[0].Event != events.Accepted && evs[1].Event != events.Accepted ||
		evs[0].Status != events.StatusDelivered && evs[1].Status != events.StatusDelivered {
		t.Fatalf("want accepted and delivered, got %+v", evs)
	}
	if rc, out, _ := runOps(t, logsMain, base...); rc != 0 || strings.Count(out, "\n") != 2 || !strings.Contains(out, "delivered") {
		t.Fatalf("logs --meta (text): rc %d\n%s", rc, out)
	}
	for _, args := range [][]string{{"--meta", "order=1234", "--meta", "shop=us"}, {"--meta", "order=12345"}} {
		if rc, out, _ := runOps(t, logsMain, append([]string{"--config", cfgPath, "--json"}, args...)...); rc != 0 || out != "" {
			t.Fatalf("logs %v: rc %d, want no events:\n%s", args, rc, out)
		}
	}
	if rc, _, errOut := runOps(t, logsMain, "--config", cfgPath, "--meta", "order"); rc != 2 || !strings.Contains(errOut, "key=value") {
		t.Fatalf("--meta without '=': rc %d: %s", rc, errOut)
	}
	sendWithMeta(t, cfgPath, dir)
}

// sendWithMeta: `jetrelay send --meta --tag` sets the fields (a non-ASCII
// value as an encoded-word, decoded by the relay) and logs --meta finds
// the message delivered.
func sendWithMeta(t *testing.T, cfgPath, dir string) {
	t.Helper()
	passFile := filepath.Join(dir, "app.password")
	if err := os.WriteFile(passFile, []byte(metaPass+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rc, out, errOut := runOps(t, sendMain, "--config", cfgPath, "--user", metaUser, "--password-file", passFile,
		"--from", "app@example.com", "--to", "rcpt@live.example", "--meta", "order=77", "--meta", "Note=Grüße",
		"--tag", "cli", "--wait", "90s")
	if rc != 0 {
		t.Fatalf("send: rc %d\n%s\n%s", rc, out, errOut)
	}
	rc, out, errOut = runOps(t, logsMain, "--config", cfgPath, "--json", "--meta", "order=77", "--status", "delivered")
	evs := parseEvents(t, out)
	if rc != 0 || len(evs) != 1 || evs[0].Meta["note"] != "Grüße" || evs[0].Tag != "cli" {
		t.Fatalf("logs --meta order=77: rc %d %+v %s", rc, evs, errOut)
	}
}

// writeDKIMKey writes a new Ed25519 key for example.com (selector s1) and
// returns its zone line.
func writeDKIMKey(t *testing.T, path string) string {
	t.Helper()
	key, err := dkim.GenerateKey(dkim.Ed25519, 0)
	if err != nil {
		t.Fatal(err)
	}
	pemBytes, err := dkim.MarshalKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	line, err := dkim.ZoneLine("s1", "example.com", key)
	if err != nil {
		t.Fatal(err)
	}
	return line
}

const metaUser, metaPass = "app", "app-pass-1"

// writeMetaConfig writes a serve config (submission on a free loopback
// port, user app, delivery through dnsAddr to mxPort, DKIM with keyFile)
// and returns its path and the submission address.
func writeMetaConfig(t *testing.T, dir, dnsAddr string, mxPort int, keyFile string) (string, string) {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte(metaPass), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	subAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	yaml := fmt.Sprintf(`hostname: relay.test
data_dir: %s
nats: {listen: "127.0.0.1:%d"}
submission:
  listeners: [{addr: "%s", tls: starttls}]
  users: [{name: %s, password_hash: "%s", allowed_from: [example.com]}]
delivery:
  port: %d
  allowed_networks: ["127.0.0.0/8"]
  dns: {servers: ["%s"], timeout: 1s}
  retry: {schedule: [1h]}
dkim:
  keys: [{domain: example.com, selector: s1, key: %s}]
admin: {listen: ""}
log: {level: info}
`, filepath.Join(dir, "data"), freePort(t), subAddr, metaUser, hash, mxPort, dnsAddr, keyFile)
	path := filepath.Join(dir, "jetrelay.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, subAddr
}

// submitMeta sends msg from app@example.com to rcpt@live.example.
func submitMeta(t *testing.T, addr, msg string) {
	t.Helper()
	// The relay's certificate is self-signed for this test run; the
	// connection is on loopback.
	c, err := smtp.DialStartTLS(addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", metaUser, metaPass)); err != nil {
		t.Fatal(err)
	}
	if err := c.SendMail("app@example.com", []string{"rcpt@live.example"}, strings.NewReader(msg)); err != nil {
		t.Fatal(err)
	}
}

// parseEvents reads `logs --json` output.
func parseEvents(t *testing.T, out string) []events.Event {
	t.Helper()
	var evs []events.Event
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var e events.Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("logs --json line %q: %v", line, err)
		}
		evs = append(evs, e)
	}
	return evs
}
