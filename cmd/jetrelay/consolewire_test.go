package main

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/relay/certgen"
	"golang.org/x/crypto/bcrypt"
)

// TestServeConsole: serve with admin.tls and a console user answers the
// console over HTTPS with a Secure session cookie; with
// admin.console.enabled false every console route is gone and the rest of
// the admin listener stays.
func TestServeConsole(t *testing.T) {
	c := writeRelayConfig(t)
	cert, err := certgen.SelfSigned([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := certgen.PEM(cert)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(c.dir, "admin.crt"), filepath.Join(c.dir, "admin.key")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	hash, _ := bcrypt.GenerateFromPassword([]byte("support-pass"), bcrypt.MinCost)
	base, err := os.ReadFile(c.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	admin := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	on := fmt.Sprintf(`admin:
  listen: %q
  tls: {cert: %q, key: %q}
  console:
    users: [{name: support, password_hash: %q, role: viewer}]
`, admin, certFile, keyFile, hash)
	writeAdmin(t, c.cfgPath, base, on)
	p := startRelay(t, c.cfgPath, admin)
	cl := &http.Client{Timeout: 30 * time.Second,
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp := waitGet(t, cl, "https://"+admin+"/console/login", p)
	csp := resp.Header.Get("Content-Security-Policy")
	if resp.StatusCode != http.StatusOK || !strings.Contains(csp, "script-src 'self'") {
		t.Fatalf("login page: %d %v", resp.StatusCode, resp.Header)
	}
	resp, err = cl.PostForm("https://"+admin+"/console/login",
		url.Values{"name": {"support"}, "password": {"support-pass"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if ck := resp.Header.Get("Set-Cookie"); resp.StatusCode != http.StatusSeeOther || !strings.Contains(ck, "Secure") ||
		!strings.Contains(ck, "HttpOnly") {
		t.Fatalf("login: %d, cookie %q", resp.StatusCode, ck)
	}
	_ = p.cmd.Process.Kill()

	c2 := writeRelayConfig(t)
	base2, _ := os.ReadFile(c2.cfgPath)
	admin2 := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	writeAdmin(t, c2.cfgPath, base2, fmt.Sprintf("admin:\n  listen: %q\n  console: {enabled: false}\n", admin2))
	p2 := startRelay(t, c2.cfgPath, admin2)
	if r := waitGet(t, cl, "http://"+admin2+"/healthz", p2); r.StatusCode != http.StatusOK {
		t.Errorf("healthz with the console off: %d", r.StatusCode)
	}
	for _, path := range []string{"/console/", "/console/login", "/console/static/console.js", "/console"} {
		if r := waitGet(t, cl, "http://"+admin2+path, p2); r.StatusCode != http.StatusNotFound {
			t.Errorf("%s with the console off: %d", path, r.StatusCode)
		}
	}
}

// writeAdmin replaces the admin line of a test config.
func writeAdmin(t *testing.T, path string, base []byte, admin string) {
	t.Helper()
	cfg := bytes.Replace(base, []byte("admin: {listen: \"\"}\n"), []byte(admin), 1)
	if bytes.Equal(cfg, base) {
		t.Fatal("no admin line in the test config")
	}
	if err := os.WriteFile(path, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
}

// waitGet gets url, retrying while the admin listener is not up yet.
func waitGet(t *testing.T, cl *http.Client, url string, p *relayProc) *http.Response {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := cl.Get(url)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return resp
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %v\n%s", url, err, p.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
