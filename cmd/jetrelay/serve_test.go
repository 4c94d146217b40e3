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
	"github.com/jetrelay/jetrelay/relay/devtools/testport"
	"github.com/jetrelay/jetrelay/relay/relaytest"
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

// freePort returns a loopback port reserved for the test (testport: a
// port from a closed :0 listener can be taken by another test's server
// before the one it was picked for binds it).
func freePort(t *testing.T) int { return testport.Port(t) }

// relayProc is a jetrelay child process.
type relayProc struct {
	cmd  *exec.Cmd
	logs *syncBuffer
}

func startRelay(t *testing.T, cfgPath, waitAddr string) *relayProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "serve", "--config", cfgPath)
	cmd.Env = append(os.Environ(), "JETRELAY_TEST_MAIN=1")
	logs := &syncBuffer{}
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
	closedPort                      int
	// mx, when set, is where delivery goes instead (a fake MX's ip:port;
	// allowed_networks then lets delivery reach loopback).
	mx string
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
	c.closedPort = freePort(t)
	c.write(t, c.userLine(t, c.user, c.pass))
	return c
}

func (c testRelayConfig) userLine(t *testing.T, name, pass string) string {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf(`{name: %s, password_hash: "%s", allowed_from: [example.com]}`, name, hash)
}

// write writes the config with the given users; delivery goes to a closed
// loopback port, so entries stay queued (deferred).
func (c testRelayConfig) write(t *testing.T, users ...string) {
	t.Helper()
	route, allowed := fmt.Sprintf("127.0.0.1:%d", c.closedPort), ""
	if c.mx != "" {
		route, allowed = c.mx, `"127.0.0.0/8"`
	}
	yaml := fmt.Sprintf(`hostname: relay.test
data_dir: %s
nats: {listen: "%s"}
submission:
  listeners: [{addr: "%s", tls: starttls}]
  users: [%s]
delivery:
  dns: {servers: ["127.0.0.1:9"]}
  routes: [{domains: ["*"], host: "%s", tls: none}]
  allowed_networks: [%s]
admin: {listen: ""}
log: {level: info}
`, filepath.Join(c.dir, "data"), c.natsAddr, c.subAddr, strings.Join(users, ", "), route, allowed)
	if err := os.WriteFile(c.cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
}

// authenticate logs in over STARTTLS.
func authenticate(addr, user, pass string) (*smtp.Client, error) {
	cl, err := smtp.DialStartTLS(addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		return nil, err
	}
	if err := cl.Auth(sasl.NewPlainClient("", user, pass)); err != nil {
		cl.Close()
		return nil, err
	}
	return cl, nil
}

// submit sends one message and returns its queue id.
func submitOne(t *testing.T, c testRelayConfig, body []byte) string {
	t.Helper()
	cl, err := authenticate(c.subAddr, c.user, c.pass)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
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
			"Date: Fri, 27 Nov 2026 10:00:00 +0000\r\nMessage-ID: <crash-%d@example.com>\r\n\r\nbody %d\r\n%s",
			i, i, i, strings.Repeat(strings.Repeat("x", 97)+"\r\n", i))) // lines under 998 octets: kept byte for byte
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
	// Parked entries (their destination failing) carry no queue id in
	// their subject: read them all once.
	parked := map[string][]byte{}
	ps, err := js.Stream(ctx, queue.ParkStreamName)
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); ; seq++ {
		m, err := ps.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(queue.SubjParked+".*.example.net"))
		if err != nil {
			break
		}
		env, err := queue.UnmarshalEnvelope([]byte(m.Header.Get(queue.HeaderEnv)))
		if err != nil {
			t.Fatal(err)
		}
		parked[env.ID], seq = m.Data, m.Sequence
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
		if data, ok := parked[id]; ok {
			found = true
			if !bytes.HasSuffix(data, body) {
				t.Errorf("%s: parked body differs from the submitted one", id)
			}
		}
		if !found {
			t.Errorf("accepted message %s is not in the queue after kill -9", id)
		}
	}
}

// TestSIGHUPReload: a user added to the file can log in after SIGHUP; a
// broken file is refused with the reason logged and the old config kept.
func TestSIGHUPReload(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	c := writeRelayConfig(t)
	p := startRelay(t, c.cfgPath, c.subAddr)
	if _, err := authenticate(c.subAddr, "newapp", "new-pass"); err == nil {
		t.Fatal("unknown user authenticated")
	}
	c.write(t, c.userLine(t, c.user, c.pass), c.userLine(t, "newapp", "new-pass"))
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	relaytest.Eventually(t, "reload ok in the log", func() bool {
		return strings.Contains(p.logs.String(), `"status":"ok"`)
	})
	cl, err := authenticate(c.subAddr, "newapp", "new-pass")
	if err != nil {
		t.Fatalf("new user after SIGHUP: %v\n%s", err, p.logs.String())
	}
	cl.Close()

	if err := os.WriteFile(c.cfgPath, []byte("hostname: relay.test\nbogus_key: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	relaytest.Eventually(t, "refusal in the log", func() bool {
		return strings.Contains(p.logs.String(), `"status":"refused"`)
	})
	if !strings.Contains(p.logs.String(), "bogus_key") {
		t.Errorf("refusal does not name the problem:\n%s", p.logs.String())
	}
	for _, u := range [][2]string{{c.user, c.pass}, {"newapp", "new-pass"}} {
		cl, err := authenticate(c.subAddr, u[0], u[1])
		if err != nil {
			t.Fatalf("%s after a refused reload: %v", u[0], err)
		}
		cl.Close()
	}
}
