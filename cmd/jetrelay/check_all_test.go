package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/jetrelay/jetrelay/relay/config"
)

// TestCheckAllProblemsOneRun: the first run — a typo key, a bad
// duration, `rate: 600/minute`, a missing certificate file and `tls:
// startls` — reports all five at once, each with its line, the misspellings
// with the word meant; the bare host name is a warning.
func TestCheckAllProblemsOneRun(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "jetrelay.yaml")
	src := "hostname: vm\n" + // 1
		"submission:\n" + // 2
		"  tls:\n" + // 3
		"    cert: " + filepath.Join(dir, "missing-cert.pem") + "\n" + // 4
		"    key: " + filepath.Join(dir, "key.pem") + "\n" + // 5
		"  users:\n" + // 6
		"    - name: app\n" + // 7
		"      password_hash: \"$2a$10$abcdefghijklmnopqrstuv\"\n" + // 8
		"      allowed_from: [example.com]\n" + // 9
		"      rate: 600/minute\n" + // 10
		"delivery:\n" + // 11
		"  max_conections: 50\n" + // 12
		"  retry: {max_age: 2days}\n" + // 13
		"  routes:\n" + // 14
		"    - domains: [\"*\"]\n" + // 15
		"      host: smarthost.example:587\n" + // 16
		"      tls: startls\n" // 17
	checkWriteFile(t, filepath.Join(dir, "key.pem"), "not checked here")
	checkWriteFile(t, path, src)
	var out, errb bytes.Buffer
	if rc := run([]string{"check", "--config", path}, stdio{nil, &out, &errb}); rc != 1 {
		t.Fatalf("rc=%d, want 1\n%s%s", rc, out.String(), errb.String())
	}
	want := []string{
		`warning: line 1: hostname: "vm" is not a fully qualified domain name`,
		`line 4: submission.tls.cert: file ` + filepath.Join(dir, "missing-cert.pem") + ` does not exist`,
		`line 10: submission.users[0].rate: bad rate "600/minute": unit must be s, m, h or d; did you mean "600/m"?`,
		`line 12: delivery.max_conections: unknown key; did you mean "max_connections"?`,
		`line 13: delivery.retry.max_age: bad duration "2days"; did you mean "48h"?`,
		`line 17: delivery.routes[0].tls: "startls" is not one of starttls, implicit, none; did you mean "starttls"?`,
		"5 problem(s) found",
	}
	for _, w := range want {
		if !strings.Contains(out.String(), w) {
			t.Errorf("output lacks %q:\n%s", w, out.String())
		}
	}
}

// TestCheckPrint: `check --print` writes YAML that parses back to the
// effective configuration, with the secrets redacted, and its findings on
// stderr.
func TestCheckPrint(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "jetrelay.yaml")
	const hash = "$2a$10$abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOP"
	checkWriteFile(t, path, "hostname: relay.example.com\n"+
		"nats: {url: \"nats://svc:s3cret@127.0.0.1:4222\"}\n"+
		"submission:\n  users:\n    - {name: app, password_hash: \""+hash+"\", allowed_from: [example.com]}\n"+
		"delivery:\n  routes: [{domains: [\"*\"], host: \"127.0.0.1:2525\", tls: starttls}]\n")
	var out, errb bytes.Buffer
	if rc := run([]string{"check", "--print", "--config", path}, stdio{nil, &out, &errb}); rc != 0 {
		t.Fatalf("rc=%d\n%s%s", rc, out.String(), errb.String())
	}
	if !strings.Contains(errb.String(), path+": OK") {
		t.Errorf("stderr lacks the verdict: %q", errb.String())
	}
	for _, secret := range []string{hash, "s3cret"} {
		if strings.Contains(out.String(), secret) {
			t.Errorf("--print shows secret %q", secret)
		}
	}
	if !strings.Contains(out.String(), "tls_verify: true") {
		t.Errorf("--print does not show the route's default tls_verify:\n%s", out.String())
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	back, err := config.Parse(out.Bytes())
	if err == nil || !strings.Contains(err.Error(), "submission.users[0].password_hash: must be a bcrypt hash") {
		t.Errorf("parse back: %v; want the redacted hash refused", err)
	}
	back.Path = path
	opts := cmp.Options{cmpopts.EquateEmpty(), cmpopts.IgnoreUnexported(config.Config{})}
	if diff := cmp.Diff(cfg.Effective(), back, opts); diff != "" {
		t.Fatalf("--print output differs from the effective config (-want +got):\n%s", diff)
	}
}

func checkWriteFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
