package config

import (
	"fmt"
	"slices"

	"golang.org/x/crypto/bcrypt"
)

// AdminTLS serves the whole admin listener (console, metrics, health)
// over TLS when both files are set.
type AdminTLS struct {
	Cert string `yaml:"cert"` // PEM certificate chain; "" = plain HTTP
	Key  string `yaml:"key"`  // PEM private key of Cert
}

// Enabled reports whether the admin listener serves TLS.
func (t AdminTLS) Enabled() bool { return t.Cert != "" || t.Key != "" }

// Console is the web console on the admin listener (/console/): message
// search and history, the live delivery log, the queue, the suppression
// list and the cluster-wide counts.
type Console struct {
	// Enabled serves the console's routes; false removes every one of them.
	Enabled bool `yaml:"enabled"`
	// Users may log in; without users nobody can (the routes answer a
	// login page only).
	Users []ConsoleUser `yaml:"users"`
}

// ConsoleUser is one console login.
type ConsoleUser struct {
	Name string `yaml:"name"` // login name, recorded as console:<name> on operator actions
	// PasswordHash is a bcrypt hash, as for submission users (make one
	// with `jetrelay console passwd NAME`).
	PasswordHash string `yaml:"password_hash"`
	// Role is viewer (read only) or operator (also retry, hold, release,
	// delete and unsuppress).
	Role string `yaml:"role"`
}

// Console roles.
const (
	RoleViewer   = "viewer"
	RoleOperator = "operator"
)

var consoleRoles = []string{RoleViewer, RoleOperator}

// defaultConsole is the built-in admin.console: on, without users.
func defaultConsole() Console { return Console{Enabled: true} }

// validateAdmin checks admin.tls and admin.console.
func (c *Config) validateAdmin(ps *problems) {
	t := c.Admin.TLS
	if t.Enabled() {
		for _, f := range []struct{ path, file string }{{"admin.tls.cert", t.Cert}, {"admin.tls.key", t.Key}} {
			switch {
			case f.file == "":
				ps.add(f.path, "required when the other of admin.tls.cert and admin.tls.key is set")
			case !fileExists(f.file):
				ps.add(f.path, "file %s does not exist", f.file)
			}
		}
	}
	seen := map[string]bool{}
	for i, u := range c.Admin.Console.Users {
		p := fmt.Sprintf("admin.console.users[%d]", i)
		switch {
		case u.Name == "":
			ps.add(p+".name", "must not be empty")
		case seen[u.Name]:
			ps.add(p+".name", "user %q is defined twice", u.Name)
		}
		seen[u.Name] = true
		if _, err := bcrypt.Cost([]byte(u.PasswordHash)); err != nil {
			ps.add(p+".password_hash", "must be a bcrypt hash (make one with `jetrelay console passwd %s`)", u.Name)
		}
		if !slices.Contains(consoleRoles, u.Role) {
			ps.add(p+".role", "must be viewer or operator, not %q", u.Role)
		}
	}
}

// redactConsole replaces the console users' password hashes (Effective).
func (e *Config) redactConsole() {
	e.Admin.Console.Users = slices.Clone(e.Admin.Console.Users)
	for i := range e.Admin.Console.Users {
		if e.Admin.Console.Users[i].PasswordHash != "" {
			e.Admin.Console.Users[i].PasswordHash = Redacted
		}
	}
}
