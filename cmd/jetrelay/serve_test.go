package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/jetrelay/jetrelay/queue"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/crypto/bcrypt"
)

// TestMain lets process-level tests run this test binary as the jetrelay
// binary (JETRELAY_TEST_MAIN=1): the same main code, no second build.
func TestMain(m *testing.M) {
	if os.Getenv("JETRELAY_TEST_MAIN") == "1" {
		os.Exit(run(os.Args[1:], stdio{os.Stdin, os.Stdout, os.Stderr}))
	}
	os.Exit(m.Run())
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// relayProc is a jetrelay child process.
type relayProc struct {
	cmd  *exec.Cmd
	logs *bytes.Buffer
}

func startRelay(t *testing.T, cfgPath, waitAddr string) *relayProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "serve", "--config", cfgPath)
	cmd.Env = append(os.Environ(), "JETRELAY_TEST_MAIN=1")
	logs := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &relayProc{cmd: cmd, logs: logs}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", waitAddr, time.Second)
		if err == nil {
			c.Close()
			return p
		}
		select {
		case <-exited:
			t.Fatalf("relay exited early:\n%s", logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("relay did not listen on %s within 60s:\n%s", waitAddr, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type testRelayConfig struct {
	dir, cfgPath, subAddr, natsAddr string
	user, pass                      string
}

func writeRelayConfig(t *testing.T) testRelayConfig {
	t.Helper()
	dir := t.TempDir()
	c := testRelayConfig{
		dir:      dir,
		cfgPath:  filepath.Join(dir, "jetrelay.yaml"),
		subAddr:  fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		natsAddr: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		user:     "app",
		pass:     "s3cret-pass",
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(c.pass), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	// Delivery goes to a closed loopback port: entries stay queued (deferred).
	yaml := fmt.Sprintf(`hostname: relay.test
data_dir: %s
nats: {listen: "%s"}
submission:
  listeners: [{addr: "%s", tls: starttls}]
  users: [{name: %s, password_hash: "%s", allowed_from: [example.com]}]
delivery:
  dns: {servers: ["127.0.0.1:9"]}
  routes: [{domains: ["*"], host: "127.0.0.1:%d", tls: none}]
admin: {listen: ""}
log: {level: warn}
`, filepath.Join(dir, "data"), c.natsAddr, c.subAddr, c.user, hash, freePort(t))
	if err := os.WriteFile(c.cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return c
}

// submit sends one message and returns its queue id.
func submitOne(t *testing.T, c testRelayConfig, body []byte) string {
	t.Helper()
	cl, err := smtp.DialStartTLS(c.subAddr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.Auth(sasl.NewPlainClient("", c.user, c.pass)); err != nil {
		t.Fatal(err)
	}
	if err := cl.Mail("app@example.com", nil); err != nil {
		t.Fatal(err)
	}
	if err := cl.Rcpt("user@example.net", nil); err != nil {
		t.Fatal(err)
	}
	w, err := cl.Data()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(body); err != nil {
		t.Fatal(err)
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		t.Fatal(err)
	}
	_, id, ok := strings.Cut(resp.StatusText, "queued as ")
	if !ok || !queue.ValidID(strings.TrimSpace(id)) {
		t.Fatalf("unexpected reply %q", resp.StatusText)
	}
	_ = cl.Quit()
	return strings.TrimSpace(id)
}

// TestCrashKeepsAcceptedMail: N messages accepted, the relay killed with
// SIGKILL, restarted on the same data_dir: all N are in the queue, byte for byte.
func TestCrashKeepsAcceptedMail(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	c := writeRelayConfig(t)
	p := startRelay(t, c.cfgPath, c.subAddr)
	const n = 25
	sent := map[string][]byte{}
	for i := 0; i < n; i++ {
		body := []byte(fmt.Sprintf("From: app@example.com\r\nTo: user@example.net\r\nSubject: crash %d\r\n"+
			"Date: Fri, 27 Nov 2026 10:00:00 +0000\r\nMessage-ID: <crash-%d@example.com>\r\n\r\nbody %d\r\n%s\r\n",
			i, i, i, strings.Repeat("x", i*97)))
		sent[submitOne(t, c, body)] = body
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_, _ = p.cmd.Process.Wait()

	startRelay(t, c.cfgPath, c.subAddr)
	pass, err := os.ReadFile(filepath.Join(c.dir, "data", queue.PasswordFileName))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect("nats://"+c.natsAddr, nats.UserInfo(queue.EmbeddedUser, strings.TrimSpace(string(pass))))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, queue.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	for id, body := range sent {
		found := false
		for _, prefix := range []string{queue.SubjReady, queue.SubjScheduled, queue.SubjHeld} {
			m, err := s.GetLastMsgForSubject(ctx, queue.Subject(prefix, id, "example.net"))
			if err != nil {
				continue
			}
			found = true
			if !bytes.HasSuffix(m.Data, body) {
				t.Errorf("%s: stored body differs from the submitted one", id)
			}
		}
		if !found {
			t.Errorf("accepted message %s is not in the queue after kill -9", id)
		}
	}
}
