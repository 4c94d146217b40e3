package main

import (
	"bytes"
	"regexp"
	"strings"
	"testing"

	"github.com/jetrelay/jetrelay/relay/config"
	"golang.org/x/crypto/bcrypt"
)

// TestConsolePasswd: the printed line is an admin.console.users entry
// that validates and whose hash matches the password read on stdin.
func TestConsolePasswd(t *testing.T) {
	var out, errb bytes.Buffer
	rc := run([]string{"console", "passwd", "--role", "operator", "support"},
		stdio{strings.NewReader("s3cret\n"), &out, &errb})
	if rc != 0 {
		t.Fatalf("exit %d: %s", rc, errb.String())
	}
	m := regexp.MustCompile(`^- \{name: "support", password_hash: "(\$2a\$10\$[^"]+)", role: operator\}\n$`).
		FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("output %q", out.String())
	}
	if err := bcrypt.CompareHashAndPassword([]byte(m[1]), []byte("s3cret")); err != nil {
		t.Errorf("hash does not match: %v", err)
	}
	yaml := "hostname: x\nadmin:\n  console:\n    users:\n    " + strings.TrimSuffix(out.String(), "\n") + "\n"
	if _, err := config.Parse([]byte(yaml)); err != nil {
		t.Errorf("the printed entry does not validate: %v\n%s", err, yaml)
	}
	for _, args := range [][]string{{"console", "passwd"}, {"console", "passwd", "--role", "admin", "x"},
		{"console", "nope"}} {
		if rc := run(args, stdio{strings.NewReader("p\n"), &out, &errb}); rc != 2 {
			t.Errorf("%v: exit %d", args, rc)
		}
	}
}
