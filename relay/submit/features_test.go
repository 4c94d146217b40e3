package submit

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/relaytest"
)

// recordingSigner prepends a fixed signature and remembers what it signed.
type recordingSigner struct {
	mu     sync.Mutex
	signed []byte
}

func (s *recordingSigner) Sign(msg []byte) ([]byte, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.signed = append([]byte(nil), msg...)
	return []byte("DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=s1; b=x\r\n"), "example.com:s1", nil
}

// sendRaw runs MAIL/RCPT/DATA on a logged-in raw client and returns the queue id.
func sendRaw(t *testing.T, c *rawClient, mail, rcpt, msg string) string {
	t.Helper()
	c.expect(mail, 250, "")
	c.expect(rcpt, 250, "")
	c.expect("DATA", 354, "")
	c.send(msg + ".\r\n")
	r := c.read()
	if r.Code != 250 {
		t.Fatalf("end of DATA: %v", r)
	}
	return strings.TrimPrefix(r.Text, "OK: queued as ")
}

// TestSignerAndNormalising: the signer sees the completed message (Received
// first), its signature is prepended, its result logged; bare LF and CR
// are stored as CRLF.
func TestSignerAndNormalising(t *testing.T) {
	t.Parallel()
	sg := &recordingSigner{}
	h := start(t, testConfig(t), harnessOpts{signer: sg})
	c := h.login(lnImplicit, appUser, appPass)
	id := sendRaw(t, c, "MAIL FROM:<a@example.com>", "RCPT TO:<x@one.test>",
		message("a@example.com", "")+"bare\nLF and bare\rCR\r\n")
	b := body(t, h.lease(1)[id+"/one.test"])
	if !bytes.HasPrefix(b, []byte("DKIM-Signature: v=1;")) ||
		!bytes.HasSuffix(b, []byte("Hello.\r\nbare\r\nLF and bare\r\nCR\r\n")) {
		t.Fatalf("stored: %q", b)
	}
	sg.mu.Lock()
	signed := sg.signed
	sg.mu.Unlock()
	if !bytes.HasPrefix(signed, []byte("Received: ")) || !bytes.HasSuffix(b, signed) {
		t.Fatalf("signer input %q is not the stored message after the signature", signed)
	}
	ev := h.logs.events("accepted")
	if len(ev) != 1 || ev[0]["dkim"] != "example.com:s1" {
		t.Fatalf("accepted events: %v", ev)
	}
}

// TestSMTPUTF8: internationalised addresses are accepted with SMTPUTF8 and
// the flag is kept; the Received protocol says UTF8SMTPSA (RFC 6531 §3.7.3).
func TestSMTPUTF8(t *testing.T) {
	t.Parallel()
	h := start(t, testConfig(t))
	c := h.login(lnImplicit, anyUser, anyPass)
	id := sendRaw(t, c, "MAIL FROM:<j\xc3\xb6rg@example.com> SMTPUTF8", "RCPT TO:<\xc3\xbc@B\xc3\xbccher.test>",
		"From: j\xc3\xb6rg@example.com\r\n\r\nhi\r\n")
	e := h.lease(1)[id+"/b\xc3\xbccher.test"]
	if e == nil {
		t.Fatal("no entry for the IDN domain")
	}
	if !e.Env.SMTPUTF8 || e.Env.From != "j\xc3\xb6rg@example.com" || e.Env.Rcpts[0].Addr != "\xc3\xbc@b\xc3\xbccher.test" {
		t.Fatalf("envelope: %+v", e.Env)
	}
	if !bytes.Contains(body(t, e), []byte("with UTF8SMTPSA")) {
		t.Error("Received protocol is not UTF8SMTPSA")
	}
}

// TestReload: new credentials apply to new AUTHs at once; an open
// connection keeps working; a removed user can send no more.
func TestReload(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	h := start(t, cfg)
	old := h.login(lnImplicit, appUser, appPass)

	next := *cfg
	next.Submission.Users = []config.User{
		{Name: appUser, PasswordHash: hash(t, "new-pass"), AllowedFrom: []string{"example.net"}},
	}
	reload(t, h.srv, &next)
	old.expect("MAIL FROM:<a@example.net>", 250, "") // same connection, new allowed_from
	old.expect("RSET", 250, "")
	old.expect("MAIL FROM:<a@example.com>", 553, "5.7.1")

	c := h.dialRaw(lnImplicit)
	c.expect("EHLO client.test", 250, "")
	c.expect("AUTH PLAIN "+plain(appUser, appPass), 535, "5.7.8")
	c.expect("AUTH PLAIN "+plain(appUser, "new-pass"), 235, "2.0.0")

	gone := *cfg
	gone.Submission.Users = []config.User{{Name: anyUser, PasswordHash: hash(t, anyPass), AllowedFrom: []string{"*"}}}
	reload(t, h.srv, &gone)
	old.expect("RSET", 250, "")
	old.expect("MAIL FROM:<a@example.net>", 530, "5.7.0")
}

// TestReloadCertificate: a reload takes a new submission.tls certificate
// for the next handshake; a certificate that cannot be loaded is refused
// by Prepare.
func TestReloadCertificate(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	h := start(t, cfg)
	before := peerCert(t, h.addr(lnImplicit))
	other := t.TempDir()
	if _, err := LoadOrCreateTLS(Settings{Hostname: cfg.Hostname, DataDir: other}); err != nil {
		t.Fatal(err)
	}
	next := *cfg
	next.Submission.TLS = config.TLSFiles{Cert: filepath.Join(other, "tls", "cert.pem"),
		Key: filepath.Join(other, "tls", "key.pem")}
	bad := next
	bad.Submission.TLS.Key = filepath.Join(other, "missing.pem")
	if _, err := h.srv.Prepare(settingsOf(&bad)); err == nil {
		t.Error("Prepare took a certificate without its key")
	}
	if !bytes.Equal(peerCert(t, h.addr(lnImplicit)).Raw, before.Raw) {
		t.Error("a refused Prepare changed the certificate")
	}
	reload(t, h.srv, &next)
	if bytes.Equal(peerCert(t, h.addr(lnImplicit)).Raw, before.Raw) {
		t.Error("the certificate did not change on reload")
	}
}

// peerCert is the certificate the implicit-TLS listener at addr presents.
func peerCert(t *testing.T, addr string) *x509.Certificate {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0]
}

// TestSessionTimeout: timeouts.session ends even a busy connection.
func TestSessionTimeout(t *testing.T) {
	t.Parallel()
	h := start(t, testConfig(t, func(c *config.Config) {
		c.Submission.Timeouts.Session = config.Duration(2 * time.Second)
		c.Submission.MaxIdleCommands = 1 << 30
	}))
	c := h.login(lnImplicit, appUser, appPass)
	deadline := time.Now().Add(testTimeout)
	for time.Now().Before(deadline) {
		c.send("NOOP\r\n")
		r, err := c.readErr()
		if err != nil {
			t.Fatalf("connection closed without a reply: %v", err)
		}
		if r.Code == 421 {
			if r.Enh != "4.4.2" {
				t.Fatalf("got %v, want 421 4.4.2", r)
			}
			return
		}
	}
	t.Fatal("session never ended")
}

// TestDataTimeout: timeouts.data bounds the whole transfer; a stalled
// client gets 421 4.4.2, the connection closes and nothing is stored.
func TestDataTimeout(t *testing.T) {
	t.Parallel()
	h := start(t, testConfig(t, func(c *config.Config) { c.Submission.Timeouts.Data = config.Duration(time.Second) }))
	c := inTx(h, appUser, appPass, "a@example.com", "x@one.test")
	c.expect("DATA", 354, "")
	c.send(message("a@example.com", "")) // and then nothing
	r := c.read()
	if r.Code != 421 || r.Enh != "4.4.2" {
		t.Fatalf("got %v, want 421 4.4.2", r)
	}
	relaytest.Eventually(t, "connection closed", func() bool { return h.srv.conns.open() == 0 })
	if n := h.stored(); n != 0 {
		t.Fatalf("%d messages stored", n)
	}
}

// TestShutdown: Shutdown ends idle sessions at once, lets a transfer in
// progress finish and be stored, and then returns.
func TestShutdown(t *testing.T) {
	t.Parallel()
	h := start(t, testConfig(t))
	idle := h.login(lnStartTLS, appUser, appPass)
	busy := inTx(h, appUser, appPass, "a@example.com", "x@one.test")
	busy.expect("DATA", 354, "")
	busy.send(message("a@example.com", ""))
	relaytest.Eventually(t, "transfer under way", func() bool {
		for c := range h.srv.conns.snapshot() {
			if c.isInData() {
				return true
			}
		}
		return false
	})
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		done <- h.srv.Shutdown(ctx)
	}()
	if r := idle.read(); r.Code != 421 {
		t.Fatalf("idle session: %v, want 421", r)
	}
	busy.send(".\r\n")
	if r := busy.read(); r.Code != 250 {
		t.Fatalf("transfer during shutdown: %v", r)
	}
	if r, err := busy.readErr(); err == nil && r.Code != 421 {
		t.Fatalf("after the transfer: %v, want 421 or close", r)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("Shutdown did not return")
	}
	if n := h.stored(); n != 1 {
		t.Fatalf("%d messages stored, want 1", n)
	}
}

// TestSizeBoundary pins max_message_bytes at the edge, counted as the
// client sent it: BDAT and DATA both take exactly the limit and refuse one
// octet more (go-smtp patch 2, third_party/go-smtp/PATCHES.md).
func TestSizeBoundary(t *testing.T) {
	t.Parallel()
	const limit = 4096
	h := start(t, testConfig(t, func(c *config.Config) { c.Submission.MaxMessageBytes = limit }))
	sized := func(n int) string {
		m := message("a@example.com", "")
		return m + strings.Repeat("y", n-len(m)-2) + "\r\n"
	}
	c := inTx(h, appUser, appPass, "a@example.com", "x@one.test")
	c.send(fmt.Sprintf("BDAT %d LAST\r\n%s", limit, sized(limit)))
	if r := c.read(); r.Code != 250 {
		t.Fatalf("BDAT of exactly the limit: %v", r)
	}
	c.expect("MAIL FROM:<a@example.com>", 250, "")
	c.expect("RCPT TO:<x@one.test>", 250, "")
	c.expect("DATA", 354, "")
	c.send(sized(limit) + ".\r\n")
	if r := c.read(); r.Code != 250 {
		t.Fatalf("DATA of exactly the limit: %v", r)
	}
	c.expect("MAIL FROM:<a@example.com>", 250, "")
	c.expect("RCPT TO:<x@one.test>", 250, "")
	c.expect("DATA", 354, "")
	c.send(sized(limit+1) + ".\r\n")
	if r := c.read(); r.Code != 552 || r.Enh != "5.3.4" {
		t.Fatalf("DATA of the limit + 1: %v", r)
	}
	c.expect("NOOP", 250, "") // the rest of the refused message was read, not taken as commands
	if n := h.stored(); n != 2 {
		t.Fatalf("%d messages stored, want 2", n)
	}
}
