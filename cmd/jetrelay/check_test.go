package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// TestCheckReportsLines: `jetrelay check` lists an unknown key and a bad
// duration with their YAML lines and exits 1; a good file exits 0.
func TestCheckReportsLines(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	badYAML := "hostname: relay.test\nsubmission:\n  max_recipients: 10\n  colour: blue\n" +
		"delivery:\n  retry: {max_age: 2days}\n"
	os.WriteFile(bad, []byte(badYAML), 0o600)
	var out, errb bytes.Buffer
	rc := run([]string{"check", "--config", bad}, stdio{strings.NewReader(""), &out, &errb})
	if rc != 1 {
		t.Fatalf("rc=%d, want 1\n%s%s", rc, out.String(), errb.String())
	}
	wants := []string{`line 4: submission.colour: unknown key`, `line 6: delivery.retry.max_age: bad duration "2days"`}
	for _, want := range wants {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	example := filepath.Join("..", "..", "configs", "jetrelay.yaml")
	if rc := run([]string{"check", "--config", example}, stdio{nil, &out, &errb}); rc != 0 {
		t.Fatalf("example config: rc=%d\n%s", rc, out.String())
	}
}

// TestUserHash: the hash printed verifies the password read on stdin with
// one trailing newline stripped.
func TestUserHash(t *testing.T) {
	var out, errb bytes.Buffer
	if rc := run([]string{"user", "hash"}, stdio{strings.NewReader("p4ss word\n"), &out, &errb}); rc != 0 {
		t.Fatalf("rc=%d %s", rc, errb.String())
	}
	hash := strings.TrimSpace(out.String())
	if err := bcrypt.CompareHashAndPassword([]byte(hash), []byte("p4ss word")); err != nil {
		t.Fatalf("hash does not verify: %v", err)
	}
	if err := bcrypt.CompareHashAndPassword([]byte(hash), []byte("p4ss word\n")); err == nil {
		t.Fatal("trailing newline was kept")
	}
}
