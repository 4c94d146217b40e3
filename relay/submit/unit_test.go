package submit

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/jetrelay/jetrelay/relay/config"
)

func TestParseMailbox(t *testing.T) {
	t.Parallel()
	cases := []struct {
		in   string
		utf8 bool
		want string
		err  error
	}{
		{in: "a@Example.COM", want: "a@example.com"},
		{in: "A.b+tag@sub.example.com", want: "A.b+tag@sub.example.com"},
		{in: "a b@example.com", want: `"a b"@example.com`}, // from a quoted-string
		{in: `a"b@example.com`, want: `"a\"b"@example.com`},
		{in: "x@[127.0.0.1]", want: "x@[127.0.0.1]"},
		{in: "x@[IPv6:::1]", want: "x@[ipv6:::1]"},
		{in: "j\xc3\xb6rg@b\xc3\xbccher.test", utf8: true, want: "j\xc3\xb6rg@b\xc3\xbccher.test"},
		{in: "j\xc3\xb6rg@example.com", err: errAddr8Bit},
		{in: "j\xff@example.com", utf8: true, err: errAddrSyntax},
		{in: "", err: errAddrSyntax},
		{in: "a@", err: errAddrSyntax},
		{in: "@example.com", err: errAddrSyntax},
		{in: "a@exa mple.com", err: errAddrSyntax},
		{in: "a@example.com.", err: errAddrSyntax},
		{in: "a@-x.com", err: errAddrSyntax},
		{in: "a@x-.com", err: errAddrSyntax},
		{in: "a\x00@x.com", err: errAddrSyntax},
		{in: "a@x.com\n", err: errAddrSyntax},
		{in: "a@[1.2.3]", err: errAddrSyntax},
		{in: "a@[IPv6:1.2.3.4]", err: errAddrSyntax},
		{in: strings.Repeat("a", 65) + "@x.com", err: errAddrSyntax},
		{in: "a@" + strings.Repeat("b", 64) + ".com", err: errAddrSyntax},
	}
	for _, c := range cases {
		m, err := parseMailbox(c.in, c.utf8)
		if !errors.Is(err, c.err) {
			t.Errorf("parseMailbox(%q) error %v, want %v", c.in, err, c.err)
			continue
		}
		if err == nil && m.String() != c.want {
			t.Errorf("parseMailbox(%q) = %q, want %q", c.in, m.String(), c.want)
		}
	}
}

func TestValidHelo(t *testing.T) {
	t.Parallel()
	for s, want := range map[string]bool{
		"client.test": true, "localhost": true, "WIN_PC-1": true, "[127.0.0.1]": true, "[IPv6:::1]": true,
		"": false, "bad!name": false, "a..b": false, "a b": false, "[1.2.3]": false, "x\x00": false, "b\xc3\xbc.test": false,
		strings.Repeat("a", 64): false,
	} {
		if got := validHelo(s); got != want {
			t.Errorf("validHelo(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestNormalize(t *testing.T) {
	t.Parallel()
	cases := []struct {
		in, want string
		reject   bool
		err      error
	}{
		{in: "a\r\nb\r\n", want: "a\r\nb\r\n"},
		{in: "a\nb\rc\r\n", want: "a\r\nb\r\nc\r\n"},
		{in: "a\r\r\nb", want: "a\r\n\r\nb\r\n"},
		{in: "no final", want: "no final\r\n"},
		{in: "", want: ""},
		{in: "a\nb\r\n", reject: true, err: errBareNewline},
		{in: "a\rb\r\n", reject: true, err: errBareNewline},
		{in: "a\x00b\r\n", err: errNUL},
		{in: strings.Repeat("x", 11) + "\r\n", err: errLineTooLong},
	}
	for _, c := range cases {
		got, err := normalize([]byte(c.in), c.reject, 10)
		if err != c.err || (err == nil && string(got) != c.want) {
			t.Errorf("normalize(%q, reject=%v) = %q, %v; want %q, %v", c.in, c.reject, got, err, c.want, c.err)
		}
	}
	in := []byte("clean\r\n")
	if out, _ := normalize(in, false, 0); &out[0] != &in[0] {
		t.Error("a clean message was copied")
	}
}

func TestScanHeader(t *testing.T) {
	t.Parallel()
	h, err := scanHeader([]byte("From: A\r\n <a@x.test>\r\nMessage-ID: <1@x>\r\nDate: now\r\n\r\nFrom: body@x\r\n"), 0)
	if err != nil || len(h.From) != 1 || h.Date != 1 || strings.TrimSpace(h.MessageID[0]) != "<1@x>" {
		t.Fatalf("scanHeader: %+v, %v", h, err)
	}
	if got, err := fromAddresses(h); err != nil || got[0] != "a@x.test" {
		t.Fatalf("fromAddresses: %v, %v", got, err)
	}
	for in, want := range map[string]error{
		" continuation first\r\n\r\n":   errBadHeader,
		"no colon\r\n\r\n":              errBadHeader,
		"Bad Name: x\r\n\r\n":           errBadHeader,
		strings.Repeat("X: y\r\n", 300): errHeaderTooBig,
	} {
		if _, err := scanHeader([]byte(in), 1024); err != want {
			t.Errorf("scanHeader(%.30q) error %v, want %v", in, err, want)
		}
	}
	if _, err := scanHeader([]byte(strings.Repeat("X: y\r\n", maxHeaderFields+1)), 0); err != errHeaderTooBig {
		t.Errorf("too many fields: %v", err)
	}
}

// TestLoadOrCreateTLS: generated once (key 0600), reused, covering the
// hostname and loopback names.
func TestLoadOrCreateTLS(t *testing.T) {
	t.Parallel()
	cfg := config.Default()
	cfg.Hostname, cfg.DataDir = "relay.test", t.TempDir()
	if _, err := LoadOrCreateTLS(settingsOf(cfg)); err != nil {
		t.Fatal(err)
	}
	certPath, keyPath := filepath.Join(cfg.DataDir, "tls", "cert.pem"), filepath.Join(cfg.DataDir, "tls", "key.pem")
	st, err := os.Stat(keyPath)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", st, err)
	}
	first, _ := os.ReadFile(certPath)
	if _, err := LoadOrCreateTLS(settingsOf(cfg)); err != nil {
		t.Fatal(err)
	}
	second, _ := os.ReadFile(certPath)
	if !bytes.Equal(first, second) {
		t.Fatal("certificate regenerated although still valid")
	}
	blk, _ := pem.Decode(first)
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"relay.test", "localhost", "127.0.0.1", "::1"} {
		if err := cert.VerifyHostname(h); err != nil {
			t.Errorf("certificate does not cover %s: %v", h, err)
		}
	}
	cfg.Hostname = "other.test"
	if _, err := LoadOrCreateTLS(settingsOf(cfg)); err != nil {
		t.Fatal(err)
	}
	if third, _ := os.ReadFile(certPath); bytes.Equal(third, first) {
		t.Error("certificate not replaced after a hostname change")
	}
}

// TestBindErrors: the message names the address and what to do.
func TestBindErrors(t *testing.T) {
	t.Parallel()
	perm := &net.OpError{Op: "listen", Net: "tcp", Err: os.NewSyscallError("bind", syscall.EACCES)}
	msg := bindError("0.0.0.0:587", perm).Error()
	for _, want := range []string{"0.0.0.0:587", "root", "CAP_NET_BIND_SERVICE", "setcap", ">= 1024"} {
		if !strings.Contains(msg, want) {
			t.Errorf("bind error %q lacks %q", msg, want)
		}
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := testConfig(t, func(c *config.Config) {
		c.Submission.Listeners = []config.Listener{
			{Addr: "127.0.0.1:0", TLS: "starttls"}, {Addr: busy.Addr().String(), TLS: "implicit"},
		}
	})
	tlsConf, err := LoadOrCreateTLS(settingsOf(cfg))
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{
		Settings: settingsOf(cfg), Queue: nopQueue{}, Events: testEmitter(t), Logger: testLogger(t), TLS: tlsConf,
		Brake: openTestBrake(t, queuetest.RunJetStream(t)),
	})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Start()
	if err == nil || !strings.Contains(err.Error(), busy.Addr().String()) ||
		!strings.Contains(err.Error(), "already in use") {
		t.Fatalf("Start: %v", err)
	}
	if len(s.Addrs()) != 0 {
		t.Fatal("listeners left bound after a failed Start")
	}
}

// TestCredCache: only accepted passwords are remembered, for credTTL,
// bounded per user; a reload starts empty.
func TestCredCache(t *testing.T) {
	t.Parallel()
	c := newCredCache()
	now := time.Now()
	if c.ok("secret", now) {
		t.Fatal("empty cache accepts")
	}
	c.add("secret", now)
	if !c.ok("secret", now.Add(credTTL-time.Second)) || c.ok("Secret", now) || c.ok("", now) {
		t.Fatal("cache does not match exactly the accepted password")
	}
	if c.ok("secret", now.Add(credTTL)) {
		t.Fatal("entry outlived credTTL")
	}
	for i := range 3 * credPerUser {
		c.add(strconv.Itoa(i), now)
	}
	if len(c.m) > credPerUser {
		t.Fatalf("%d entries, bound is %d", len(c.m), credPerUser)
	}
	for _, d := range []string{"secret"} {
		for k := range c.m {
			if string(k[:]) == d {
				t.Fatal("password stored in clear")
			}
		}
	}
	cfg := testConfig(t)
	rates, _ := OpenRates(t.Context(), RateOptions{}) // local only
	p1, err := newPolicy(cfg.Submission, nil, rates)
	if err != nil {
		t.Fatal(err)
	}
	p1.user(appUser).creds.add(appPass, now)
	p2, err := newPolicy(cfg.Submission, p1, rates)
	if err != nil {
		t.Fatal(err)
	}
	if p2.user(appUser).creds.ok(appPass, now) {
		t.Fatal("reload kept the credential cache")
	}
}
