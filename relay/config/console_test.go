package config

import (
	"strings"
	"testing"
)

// TestConsoleValidation: every admin.console and admin.tls problem is
// reported with its line; the defaults turn the console on without users.
func TestConsoleValidation(t *testing.T) {
	yaml := "hostname: x\nadmin:\n  tls: {cert: /nonexistent/cert.pem}\n  console:\n    users:\n" +
		"      - {name: a, password_hash: \"$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy\", role: viewer}\n" +
		"      - {name: a, password_hash: plain, role: admin}\n" +
		"      - {name: \"\", password_hash: \"$2y$\", role: operator}\n"
	_, err := Parse([]byte(yaml))
	if err == nil {
		t.Fatal("no error")
	}
	for _, w := range []string{
		`admin.tls.cert: file /nonexistent/cert.pem does not exist`,
		`admin.tls.key: required when the other of admin.tls.cert and admin.tls.key is set`,
		`line 7: admin.console.users[1].name: user "a" is defined twice`,
		`line 7: admin.console.users[1].password_hash: must be a bcrypt hash`,
		`line 7: admin.console.users[1].role: must be viewer or operator, not "admin"`,
		`line 8: admin.console.users[2].name: must not be empty`,
		`line 8: admin.console.users[2].password_hash: must be a bcrypt hash`,
	} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q\ndoes not contain %q", err, w)
		}
	}
	if strings.Contains(err.Error(), "users[0]") {
		t.Errorf("the valid user was refused: %v", err)
	}
	c := Default()
	if !c.Admin.Console.Enabled || len(c.Admin.Console.Users) != 0 || c.Admin.TLS.Enabled() {
		t.Errorf("defaults %+v", c.Admin)
	}
}

// TestConsoleHashRedacted: Effective hides console password hashes and
// leaves the caller's config alone.
func TestConsoleHashRedacted(t *testing.T) {
	c := Default()
	c.Admin.Console.Users = []ConsoleUser{{Name: "a", PasswordHash: "$2a$10$x", Role: RoleViewer}}
	e := c.Effective()
	if e.Admin.Console.Users[0].PasswordHash != Redacted || c.Admin.Console.Users[0].PasswordHash != "$2a$10$x" {
		t.Errorf("effective %+v, original %+v", e.Admin.Console.Users, c.Admin.Console.Users)
	}
}
