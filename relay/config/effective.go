package config

import (
	"bytes"
	"net/url"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// Redacted replaces a secret in the output of Effective.
const Redacted = "REDACTED"

// Effective returns a copy of c as the relay applies it: the defaults an
// absent key implies (delivery.routes[].tls_verify, bounces.suppress,
// dkim.keys[].sign) are written out, and secrets are replaced by Redacted
// (password hashes; user names, passwords and tokens inside nats.url).
// File paths, including key and password files, are kept: they are not
// secrets and an operator needs to see which file is used. Lists and maps
// it does not change are shared with c: treat the result as read-only.
func (c *Config) Effective() *Config {
	e := *c
	e.root = nil
	e.Submission.Users = slices.Clone(c.Submission.Users)
	for i := range e.Submission.Users {
		u := &e.Submission.Users[i]
		if u.PasswordHash != "" {
			u.PasswordHash = Redacted
		}
	}
	e.redactConsole()
	e.NATS.URL = redactURLs(c.NATS.URL)
	e.Delivery.Routes = slices.Clone(c.Delivery.Routes)
	for i := range e.Delivery.Routes {
		r := &e.Delivery.Routes[i]
		r.TLSVerify = boolPtr(r.Verify())
		if r.Auth != nil {
			a := *r.Auth
			r.Auth = &a
		}
	}
	e.Bounces.Suppress = boolPtr(c.Bounces.SuppressEnabled())
	e.DKIM.Keys = slices.Clone(c.DKIM.Keys)
	for i := range e.DKIM.Keys {
		e.DKIM.Keys[i].Sign = boolPtr(e.DKIM.Keys[i].Signs())
	}
	return &e
}

// EffectiveYAML renders Effective as YAML that Parse reads back to the same
// settings (a redacted password hash does not validate, on purpose).
func (c *Config) EffectiveYAML() ([]byte, error) {
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(c.Effective()); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// redactURLs hides the credentials of each comma-separated NATS URL: a
// password, or a user name alone (a NATS token).
func redactURLs(list string) string {
	if list == "" {
		return ""
	}
	parts := strings.Split(list, ",")
	for i, p := range parts {
		u, err := url.Parse(strings.TrimSpace(p))
		if err != nil {
			if strings.Contains(p, "@") { // unparsable: hide everything before the host
				parts[i] = Redacted + "@" + p[strings.LastIndex(p, "@")+1:]
			}
			continue
		}
		if u.User == nil {
			continue
		}
		if _, hasPass := u.User.Password(); hasPass {
			u.User = url.UserPassword(u.User.Username(), Redacted)
		} else {
			u.User = url.User(Redacted)
		}
		parts[i] = u.String()
	}
	return strings.Join(parts, ",")
}

func boolPtr(b bool) *bool { return &b }
