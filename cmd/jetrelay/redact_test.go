package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/relaytest"
)

// TestNATSCredentialsNotPrinted: nats.url credentials appear neither in the
// error and log of a failed start, nor in the ops commands' errors.
func TestNATSCredentialsNotPrinted(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "jetrelay.yaml")
	yaml := fmt.Sprintf(`hostname: relay.test
data_dir: %s
nats: {url: "nats://user:secret-pw@127.0.0.1:1"}
submission:
  listeners: [{addr: "127.0.0.1:%d", tls: starttls}]
admin: {listen: ""}
`, filepath.Join(dir, "data"), freePort(t))
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb syncBuffer
	if rc := runServe([]string{"--config", cfgPath}, stdio{in: strings.NewReader(""), out: &out, err: &errb}); rc == 0 {
		t.Fatal("serve started without NATS")
	}
	if !strings.Contains(errb.String(), "127.0.0.1:1") {
		t.Errorf("the error does not say where it failed: %s", errb.String())
	}
	for name, text := range map[string]string{"stderr": errb.String(), "log": out.String()} {
		if strings.Contains(text, "secret") {
			t.Errorf("serve %s shows the password:\n%s", name, text)
		}
	}

	flags := []string{"--config", cfgPath, "--nats", "nats://tok-secret@127.0.0.1:1"}
	for _, c := range []struct {
		main func(context.Context, []string, stdio) int
		args []string
	}{{logsMain, flags}, {queueMain, append([]string{"ls"}, flags...)}, {suppressMain, append([]string{"ls"}, flags...)}} {
		args := c.args
		rc, stdout, stderr := runOps(t, c.main, args...)
		if rc == 0 || strings.Contains(stdout+stderr, "secret") || !strings.Contains(stderr, "127.0.0.1:1") {
			t.Errorf("%v: rc %d, output:\n%s%s", args, rc, stdout, stderr)
		}
	}
}

// TestStartedLineRedactsNATSURL: the "jetrelay running" line of a relay on
// an external NATS names the server but not the password in its URL.
func TestStartedLineRedactsNATSURL(t *testing.T) {
	t.Parallel()
	natsDir := t.TempDir()
	q := queuetest.RunJetStream(t, queuetest.Options{DataDir: natsDir, Listen: "127.0.0.1:0"})
	pass, err := os.ReadFile(filepath.Join(natsDir, queue.PasswordFileName))
	if err != nil {
		t.Fatal(err)
	}
	secret := strings.TrimSpace(string(pass))
	u, err := url.Parse(q.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(queue.EmbeddedUser, secret)

	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "jetrelay.yaml")
	yaml := fmt.Sprintf(`hostname: relay.test
data_dir: %s
nats: {url: "%s"}
submission:
  listeners: [{addr: "127.0.0.1:%d", tls: starttls}]
delivery:
  dns: {servers: ["127.0.0.1:9"]}
admin: {listen: ""}
`, filepath.Join(dir, "data"), u.String(), freePort(t))
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	var out, errb syncBuffer
	sio := stdio{in: strings.NewReader(""), out: &out, err: &errb}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, newLogger(cfg, sio), sio) }()
	relaytest.Eventually(t, "relay running", func() bool {
		return strings.Contains(out.String(), "jetrelay running")
	})
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve: %v\n%s", err, out.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("serve did not stop")
	}
	logs := out.String() + errb.String()
	if strings.Contains(logs, secret) {
		t.Fatalf("the log shows the NATS password:\n%s", logs)
	}
	if !strings.Contains(logs, `"nats":"nats://jetrelay:xxxxx@127.0.0.1:`) {
		t.Fatalf("started line lacks the redacted URL:\n%s", logs)
	}
}
