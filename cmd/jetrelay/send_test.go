package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/relaytest"
	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"
)

// inProcRelay is `jetrelay serve` running in this process from a config
// file: submission on loopback, embedded NATS, delivery through a fake DNS
// to a fake MX (zone live.example).
type inProcRelay struct {
	cfgPath, subAddr, dataDir string
	user, passFile            string
	mx                        *relaytest.MX
}

func startInProcRelay(t *testing.T) *inProcRelay {
	t.Helper()
	zone := relaytest.NewZone()
	dnsAddr := relaytest.FakeDNS(t, zone)
	mx := relaytest.FakeMX(t)
	zone.AddMX("live.example", 10, "mx.live.example")
	zone.AddA("mx.live.example", mx.IP)
	dir := t.TempDir()
	r := &inProcRelay{cfgPath: filepath.Join(dir, "jetrelay.yaml"), subAddr: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		dataDir: filepath.Join(dir, "data"), user: "app", passFile: filepath.Join(dir, "app.password"), mx: mx}
	const pass = "app-pass-1"
	hash, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	yaml := fmt.Sprintf(`hostname: relay.test
data_dir: %s
nats: {listen: "127.0.0.1:%d"}
submission:
  listeners: [{addr: "%s", tls: starttls}]
  users: [{name: app, password_hash: "%s", allowed_from: [example.com]}]
  auth_failures: {max: 3, max_per_user: 3, delay: 1ms}
delivery:
  port: %d
  allowed_networks: ["127.0.0.0/8"]
  dns: {servers: ["%s"], timeout: 1s}
  retry: {schedule: [1h]}
admin: {listen: ""}
log: {level: info}
`, r.dataDir, freePort(t), r.subAddr, hash, mx.Port, dnsAddr)
	for path, data := range map[string]string{r.cfgPath: yaml, r.passFile: pass + "\n"} {
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
		c, err := net.DialTimeout("tcp", r.subAddr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return r
}

// send runs `jetrelay send` against the relay with the given extra args.
func (r *inProcRelay) send(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	base := []string{"--config", r.cfgPath, "--user", r.user, "--password-file", r.passFile,
		"--from", "app@example.com", "--wait", "90s"}
	return runOps(t, sendMain, append(base, args...)...)
}

func TestSendFollowsToOutcome(t *testing.T) {
	t.Parallel()
	r := startInProcRelay(t)
	r.mx.ReplyRcpt("gone@live.example", relaytest.Err(550, "5.1.1", "no such user"), -1)
	r.mx.ReplyRcpt("later@live.example", relaytest.Err(451, "4.7.1", "greylisted"), -1)
	attach := filepath.Join(t.TempDir(), "report.csv")
	if err := os.WriteFile(attach, bytes.Repeat([]byte("a,b\n"), 100), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, rcpt string
		extra      []string
		rc         int
		want       string
	}{
		{"delivered", "ok@live.example", []string{"--attach", attach, "--subject", "Grüße"}, 0, "delivered"},
		{"failed", "gone@live.example", nil, 1, "550 5.1.1"},
		{"deferred", "later@live.example", nil, 75, "451 4.7.1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rc, out, errOut := r.send(t, append([]string{"--to", c.rcpt}, c.extra...)...)
			if rc != c.rc || !strings.Contains(out, "queued as ") || !strings.Contains(out, c.want) {
				t.Fatalf("send rc %d (want %d):\n%s%s", rc, c.rc, out, errOut)
			}
		})
	}
	msgs := r.mx.Messages()
	if len(msgs) != 1 {
		t.Fatalf("fake MX got %d messages, want 1", len(msgs))
	}
	body := string(msgs[0].Body)
	for _, want := range []string{
		"Content-Type: multipart/mixed", `filename=report.csv`, "Content-Transfer-Encoding: base64",
		"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=", "YSxiCmEsYgph"} {
		if !strings.Contains(body, want) {
			t.Errorf("delivered message lacks %q:\n%s", want, body)
		}
	}
}

func TestSendRefusals(t *testing.T) {
	t.Parallel()
	r := startInProcRelay(t)
	if rc, _, errOut := r.send(t); rc != 2 || !strings.Contains(errOut, "--to") {
		t.Fatalf("no --to: rc %d %s", rc, errOut)
	}
	rc, out, errOut := r.send(t, "--to", "x@live.example", "--from", "app@elsewhere.test")
	if rc != 1 || strings.Contains(out, "queued as") || !strings.Contains(errOut, "MAIL FROM") {
		t.Fatalf("refused sender: rc %d\n%s%s", rc, out, errOut)
	}
	rc, out, errOut = r.send(t, "--to", "x@live.example", "--to", "jürgen@live.example", "--no-wait")
	if rc != 0 || !strings.Contains(out, "queued as ") || strings.Contains(out, "delivered") {
		t.Fatalf("--no-wait (with an SMTPUTF8 recipient): rc %d\n%s%s", rc, out, errOut)
	}
}

// failAuth makes n failed AUTH attempts from loopback.
func failAuth(t *testing.T, addr string, n int) {
	t.Helper()
	for range n {
		cl, err := authenticate(addr, "app", "wrong")
		if err == nil {
			cl.Close()
			t.Fatal("wrong password accepted")
		}
	}
}

func TestAuthBansAndUnban(t *testing.T) {
	t.Parallel()
	r := startInProcRelay(t)
	args := func(rest ...string) []string { return append(rest, "--config", r.cfgPath) }
	failAuth(t, r.subAddr, 3)
	var bans []map[string]any
	queuetest.Eventually(t, 20*time.Second, "ban listed", func() bool {
		rc, out, _ := runOps(t, authMain, args("bans", "--json")...)
		bans = nil
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			var b map[string]any
			if json.Unmarshal([]byte(l), &b) == nil {
				bans = append(bans, b)
			}
		}
		return rc == 0 && len(bans) >= 1 && bans[0]["client"] == "127.0.0.1"
	})
	if rc, out, _ := runOps(t, authMain, args("bans")...); rc != 0 || !strings.Contains(out, "127.0.0.1") ||
		!strings.Contains(out, "CLIENT") {
		t.Fatalf("bans table rc %d:\n%s", rc, out)
	}
	if _, err := authenticate(r.subAddr, "app", "app-pass-1"); err == nil {
		t.Fatal("banned client logged in")
	}
	rc, out, errOut := runOps(t, authMain, args("unban", "127.0.0.1")...)
	if rc != 0 || !strings.Contains(out, "unbanned 127.0.0.1") {
		t.Fatalf("unban rc %d: %s %s", rc, out, errOut)
	}
	if rc, out, _ := runOps(t, authMain, args("bans", "--json")...); rc != 0 || strings.TrimSpace(out) != "" {
		t.Fatalf("bans after unban rc %d: %s", rc, out)
	}
	cl, err := authenticate(r.subAddr, "app", "app-pass-1")
	if err != nil {
		t.Fatalf("login after unban: %v", err)
	}
	cl.Close()
	failAuth(t, r.subAddr, 3)
	if rc, out, _ := runOps(t, authMain, args("unban", "--all")...); rc != 0 || !strings.Contains(out, "every client") {
		t.Fatalf("unban --all rc %d: %s", rc, out)
	}
	rc, _, errOut = runOps(t, authMain, args("unban", "192.0.2.1")...)
	if rc != 1 || !strings.Contains(errOut, "no ban") {
		t.Fatalf("unban of a client without a ban: rc %d %s", rc, errOut)
	}
	for _, bad := range [][]string{{"unban"}, {"unban", "1.2.3.4", "5.6.7.8"}, {"bogus"}, {"unban", "not-an-ip"}} {
		if rc, _, _ := runOps(t, authMain, args(bad...)...); rc != 2 {
			t.Errorf("auth %v: rc %d, want 2", bad, rc)
		}
	}
}
