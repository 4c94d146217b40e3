package config

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/relay/netguard"
)

var (
	listenerTLS  = []string{"starttls", "implicit"}
	routeTLS     = []string{"starttls", "implicit", "none"}
	tlsPolicies  = []string{"none", "opportunistic", "required", "verify"}
	bareNewlines = []string{"normalize", "reject"}
	longLines    = []string{"encode", "reject"}
	logFormats   = []string{"json", "console"}
	logLevels    = []string{"trace", "debug", "info", "warn", "error"}
)

// minMemoryLimit: below this the GC would run all the time.
const minMemoryLimit = 32 << 20

// gc_percent bounds: below 10 the GC runs nearly all the time; above 1000
// it lets the heap grow to eleven times the live state.
const (
	minGCPercent = 10
	maxGCPercent = 1000
)

// Validate checks the whole configuration and returns every problem at once
// (errors.Join of Problem values).
func (c *Config) Validate() error {
	ps := &problems{c: c}
	if strings.TrimSpace(c.Hostname) == "" || strings.ContainsAny(c.Hostname, " \t\r\n") {
		ps.add("hostname", "must be a host name")
	}
	if c.DataDir == "" {
		ps.add("data_dir", "must not be empty")
	}
	c.validateNATS(ps)
	c.validateSubmission(ps)
	c.validateGuards(ps) // guard.go
	c.validateDelivery(ps)
	c.validateShaping(ps)
	c.validateEgress(ps)
	checkNetworks(ps, "delivery.denied_networks", c.Delivery.DeniedNetworks)
	checkNetworks(ps, "delivery.allowed_networks", c.Delivery.AllowedNetworks)
	c.validateBounces(ps)
	c.validateFBL(ps)
	c.validateDKIM(ps)
	c.validateTLSRPT(ps)
	c.validateWebhooks(ps)
	c.validateEventsIndex(ps)
	if c.Admin.Listen != "" {
		checkAddr(ps, "admin.listen", c.Admin.Listen)
	}
	c.validateAdmin(ps)
	oneOf(ps, "log.format", c.Log.Format, logFormats)
	oneOf(ps, "log.level", c.Log.Level, logLevels)
	if c.MemoryLimit != 0 && c.MemoryLimit < minMemoryLimit {
		ps.add("memory_limit", "must be 0 (no limit) or at least 32MiB")
	}
	switch {
	case c.GCPercent == -1 && c.MemoryLimit == 0:
		ps.add("gc_percent", "-1 (collect only near memory_limit) needs a memory_limit; with neither the heap would grow without bound")
	case c.GCPercent != -1 && (c.GCPercent < minGCPercent || c.GCPercent > maxGCPercent):
		ps.add("gc_percent", "must be -1 or between %d and %d", minGCPercent, maxGCPercent)
	}
	return ps.err()
}

func (c *Config) validateNATS(ps *problems) {
	n := c.NATS
	if n.URL == "" {
		if n.Listen != "" {
			checkAddr(ps, "nats.listen", n.Listen)
		}
	} else {
		for i, u := range strings.Split(n.URL, ",") {
			if !strings.Contains(u, "://") { // not quoted: it may hold a password
				ps.add("nats.url", "entry %d is not a URL such as nats://host:4222", i+1)
			}
		}
		if n.Credentials != "" && n.User != "" {
			ps.add("nats.credentials", "use either credentials or user + password_file, not both")
		}
		if n.User != "" && n.PasswordFile == "" {
			ps.add("nats.password_file", "required with nats.user")
		}
	}
	if n.Credentials != "" && !fileExists(n.Credentials) {
		ps.add("nats.credentials", "file %s does not exist", n.Credentials)
	}
	if n.Replicas < 1 || n.Replicas > 5 {
		ps.add("nats.replicas", "must be between 1 and 5")
	}
	if _, err := c.SyncInterval(); err != nil {
		ps.add("nats.sync", "%v", err)
	}
	c.validateCluster(ps)
}

// SyncInterval returns 0 for "always" or the configured flush interval.
func (c *Config) SyncInterval() (time.Duration, error) {
	s := strings.TrimSpace(c.NATS.Sync)
	if s == "" || s == "always" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("must be \"always\" or a positive duration such as 2m, not %q", s)
	}
	return d, nil
}

func (c *Config) validateSubmission(ps *problems) {
	s := c.Submission
	validateSubmissionListeners(ps, s)
	validateSubmissionLimits(ps, s)
	validateAuthFailures(ps, s.AuthFailures)
	for i, n := range s.TrustedNetworks {
		if _, err := ParseNetwork(n); err != nil {
			ps.add(fmt.Sprintf("submission.trusted_networks[%d]", i), "%q is not a CIDR prefix or IP address", n)
		}
	}
	validateProxy(ps, s)
	if s.MaxLineLength < 1000 {
		ps.add("submission.max_line_length", "must be at least 1000 (RFC 5322 §2.1.1)")
	}
	oneOf(ps, "submission.bare_newlines", s.BareNewlines, bareNewlines)
	oneOf(ps, "submission.long_lines", s.LongLines, longLines)
	if s.MaxInflightBytes < 2*s.MaxMessageBytes { // a growing buffer briefly holds old and new copy
		ps.add("submission.max_inflight_bytes", "must be at least twice max_message_bytes (%d)", int64(s.MaxMessageBytes))
	}
	validateSubmissionUsers(ps, s.Users)
}

// validateSubmissionListeners checks the listener addresses and TLS modes
// and the optional certificate/key pair of the submission section.
func validateSubmissionListeners(ps *problems, s Submission) {
	if len(s.Listeners) == 0 {
		ps.add("submission.listeners", "at least one listener is needed")
	}
	for i, l := range s.Listeners {
		p := fmt.Sprintf("submission.listeners[%d]", i)
		checkAddr(ps, p+".addr", l.Addr)
		oneOf(ps, p+".tls", l.TLS, listenerTLS)
	}
	if (s.TLS.Cert == "") != (s.TLS.Key == "") {
		ps.add("submission.tls", "set both cert and key, or neither (a certificate is then generated)")
	}
	certFiles := []struct{ path, file string }{{"submission.tls.cert", s.TLS.Cert}, {"submission.tls.key", s.TLS.Key}}
	for _, f := range certFiles {
		if f.file != "" && !fileExists(f.file) {
			ps.add(f.path, "file %s does not exist", f.file)
		}
	}
}

// validateSubmissionLimits checks that the submission size, count and
// timeout limits are positive.
func validateSubmissionLimits(ps *problems, s Submission) {
	positive(ps, "submission.max_message_bytes", int64(s.MaxMessageBytes))
	positive(ps, "submission.max_recipients", int64(s.MaxRecipients))
	positive(ps, "submission.max_connections", int64(s.MaxConnections))
	positive(ps, "submission.max_connections_per_ip", int64(s.MaxConnectionsPerIP))
	positive(ps, "submission.max_idle_commands", int64(s.MaxIdleCommands))
	positive(ps, "submission.timeouts.idle", int64(s.Timeouts.Idle))
	positive(ps, "submission.timeouts.session", int64(s.Timeouts.Session))
	positive(ps, "submission.timeouts.data", int64(s.Timeouts.Data))
	positive(ps, "submission.timeouts.pre_auth.idle", int64(s.Timeouts.PreAuth.Idle))
	positive(ps, "submission.timeouts.pre_auth.session", int64(s.Timeouts.PreAuth.Session))
}

// validateSubmissionUsers checks the submission users: unique non-empty
// names, bcrypt password hashes and well-formed allowed_from entries.
func validateSubmissionUsers(ps *problems, users []User) {
	seen := map[string]bool{}
	for i, u := range users {
		p := fmt.Sprintf("submission.users[%d]", i)
		if u.Name == "" {
			ps.add(p+".name", "must not be empty")
		} else if seen[u.Name] {
			ps.add(p+".name", "user %q is defined twice", u.Name)
		}
		seen[u.Name] = true
		if !strings.HasPrefix(u.PasswordHash, "$2") {
			ps.add(p+".password_hash", "must be a bcrypt hash (make one with `jetrelay user hash`)")
		}
		if len(u.AllowedFrom) == 0 {
			ps.add(p+".allowed_from", "list the domains or addresses this user may send from")
		}
		for j, a := range u.AllowedFrom {
			if a == "" || strings.ContainsAny(a, " \t<>") || strings.Count(a, "@") > 1 {
				ps.add(fmt.Sprintf("%s.allowed_from[%d]", p, j), "%q is not a domain or address", a)
			}
		}
	}
}

// validateDelivery checks the delivery section: port, DNS servers, TLS
// policies, routes, limits, the retry schedule and timeouts.
func (c *Config) validateDelivery(ps *problems) {
	d := c.Delivery
	if d.Port < 1 || d.Port > 65535 {
		ps.add("delivery.port", "must be a TCP port")
	}
	for i, s := range d.DNS.Servers {
		host := s
		if h, _, err := net.SplitHostPort(s); err == nil {
			host = h
		}
		if net.ParseIP(host) == nil {
			ps.add(fmt.Sprintf("delivery.dns.servers[%d]", i), "%q must be an IP or IP:port", s)
		}
	}
	oneOf(ps, "delivery.dns.dnssec", d.DNS.DNSSEC, dnssecModes)
	oneOf(ps, "delivery.tls.default", d.TLS.Default, tlsPolicies)
	for dom, pol := range d.TLS.Domains {
		oneOf(ps, "delivery.tls.domains."+dom, pol, tlsPolicies)
	}
	if d.TLS.CAFile != "" && !fileExists(d.TLS.CAFile) {
		ps.add("delivery.tls.ca_file", "file %s does not exist", d.TLS.CAFile)
	}
	for i, r := range d.Routes {
		validateRoute(ps, fmt.Sprintf("delivery.routes[%d]", i), r)
	}
	if d.MTASTS.HTTPSPort < 1 || d.MTASTS.HTTPSPort > 65535 {
		ps.add("delivery.mta_sts.https_port", "must be a TCP port")
	}
	positive(ps, "delivery.max_connections", int64(d.MaxConnections))
	positive(ps, "delivery.max_mx_addresses", int64(d.MaxMXAddresses))
	if len(d.Retry.Schedule) == 0 {
		ps.add("delivery.retry.schedule", "at least one interval is needed")
	}
	for i, s := range d.Retry.Schedule {
		if s <= 0 {
			ps.add(fmt.Sprintf("delivery.retry.schedule[%d]", i), "must be positive")
		}
	}
	positive(ps, "delivery.retry.max_age", int64(d.Retry.MaxAge))
	t := d.Timeouts
	for _, f := range []struct {
		name string
		v    Duration
	}{{"connect", t.Connect}, {"greeting", t.Greeting}, {"mail", t.Mail}, {"rcpt", t.Rcpt},
		{"data_init", t.DataInit}, {"data_block", t.DataBlock}, {"data_final", t.DataFinal}, {"idle", t.Idle},
		{"attempt", t.Attempt}} {
		positive(ps, "delivery.timeouts."+f.name, int64(f.v))
	}
	if d.SourceIP != "" && net.ParseIP(d.SourceIP) == nil {
		ps.add("delivery.source_ip", "%q is not an IP address", d.SourceIP)
	}
}

// validateRoute checks one smarthost route at path p: its domains, its
// host:port, its TLS mode, and AUTH only with a password and over TLS.
func validateRoute(ps *problems, p string, r Route) {
	if len(r.Domains) == 0 {
		ps.add(p+".domains", "list the domains for this route, or \"*\"")
	}
	if _, port, err := net.SplitHostPort(r.Host); err != nil || port == "" {
		ps.add(p+".host", "%q must be name:port or ip:port", r.Host)
	} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		ps.add(p+".host", "bad port in %q", r.Host)
	}
	oneOf(ps, p+".tls", r.TLS, routeTLS)
	if r.Auth != nil {
		if r.Auth.User == "" {
			ps.add(p+".auth.user", "must not be empty")
		}
		if r.Auth.PasswordEnv == "" {
			ps.add(p+".auth.password_env", "name the environment variable holding the password")
		} else if _, ok := os.LookupEnv(r.Auth.PasswordEnv); !ok {
			ps.add(p+".auth.password_env", "environment variable %s is not set", r.Auth.PasswordEnv)
		}
		if r.TLS == "none" {
			ps.add(p+".auth", "AUTH over a plaintext connection is refused; use tls: starttls or implicit")
		}
	}
}

// checkNetworks reports every entry of a network list that does not parse.
func checkNetworks(ps *problems, path string, list []string) {
	for i, s := range list {
		if _, err := netguard.ParsePrefix(s); err != nil {
			ps.add(fmt.Sprintf("%s[%d]", path, i), "%v", err)
		}
	}
}

func (c *Config) validateBounces(ps *problems) {
	b := c.Bounces
	if b.From != "" && !strings.Contains(b.From, "@") {
		ps.add("bounces.from", "%q is not an address", b.From)
	}
	if b.Listen != "" {
		checkAddr(ps, "bounces.listen", b.Listen)
		if b.VERPDomain == "" {
			ps.add("bounces.listen", "needs bounces.verp_domain: the listener accepts mail only for it")
		}
	}
	if b.VERPDomain != "" && strings.ContainsAny(b.VERPDomain, "@ \t") {
		ps.add("bounces.verp_domain", "%q is not a domain", b.VERPDomain)
	}
	if b.VERPMaxAge.D() < time.Hour || b.VERPMaxAge.D() > MaxVERPAge {
		ps.add("bounces.verp_max_age", "must be between 1h and %s (the life of a VERP record)", MaxVERPAge)
	}
	in := b.Intake
	if in.MaxConnections < 1 {
		ps.add("bounces.intake.max_connections", "must be at least 1")
	}
	if in.MaxConnectionsPerIP < 1 || in.MaxConnectionsPerIP > in.MaxConnections {
		ps.add("bounces.intake.max_connections_per_ip", "must be between 1 and bounces.intake.max_connections")
	}
	if in.Idle.D() <= 0 {
		ps.add("bounces.intake.idle", "must be positive")
	}
	if in.Session.D() < in.Idle.D() {
		ps.add("bounces.intake.session", "must be at least bounces.intake.idle")
	}
}

func (c *Config) validateDKIM(ps *problems) {
	for i, k := range c.DKIM.Keys {
		p := fmt.Sprintf("dkim.keys[%d]", i)
		if k.Domain == "" {
			ps.add(p+".domain", "must not be empty")
		}
		if k.Selector == "" || strings.ContainsAny(k.Selector, " \t@") {
			ps.add(p+".selector", "must be a DNS label such as s2026")
		}
		if k.Key == "" {
			ps.add(p+".key", "name the PEM key file")
		} else if !fileExists(k.Key) {
			ps.add(p+".key", "file %s does not exist", k.Key)
		}
	}
}

func checkAddr(ps *problems, path, addr string) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		ps.add(path, "%q must be host:port or :port", addr)
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		ps.add(path, "bad port in %q", addr)
	}
	_ = host
}

func oneOf(ps *problems, path, v string, allowed []string) {
	for _, a := range allowed {
		if v == a {
			return
		}
	}
	if s := suggest(v, allowed); s != "" {
		ps.add(path, "%q is not one of %s; did you mean %q?", v, strings.Join(allowed, ", "), s)
		return
	}
	ps.add(path, "%q is not one of %s", v, strings.Join(allowed, ", "))
}

func positive(ps *problems, path string, v int64) {
	if v <= 0 {
		ps.add(path, "must be greater than zero")
	}
}

// validateAuthFailures checks submission.auth_failures: a window and a ban
// are needed whenever a ban can happen.
func validateAuthFailures(ps *problems, a AuthFailures) {
	const p = "submission.auth_failures"
	if a.Max < 0 {
		ps.add(p+".max", "must not be negative (0 = no IP ban)")
	}
	if a.MaxPerUser < 0 {
		ps.add(p+".max_per_user", "must not be negative (0 = no (user, IP) ban)")
	}
	if a.Max > 0 || a.MaxPerUser > 0 {
		positive(ps, p+".window", int64(a.Window))
		positive(ps, p+".ban", int64(a.Ban))
	}
	if a.Delay < 0 {
		ps.add(p+".delay", "must not be negative")
	}
}

// ParseNetwork parses a CIDR prefix ("10.0.0.0/8", "2001:db8::/32") or a
// single address (a /32 or /128), masked to its prefix.
func ParseNetwork(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// validateProxy checks submission.proxy_from, and that a listener expecting
// PROXY protocol headers has balancers to accept them from.
func validateProxy(ps *problems, s Submission) {
	for i, n := range s.ProxyFrom {
		if _, err := ParseNetwork(n); err != nil {
			ps.add(fmt.Sprintf("submission.proxy_from[%d]", i), "%q is not a CIDR prefix or IP address", n)
		}
	}
	for i, l := range s.Listeners {
		if l.ProxyProtocol && len(s.ProxyFrom) == 0 {
			ps.add(fmt.Sprintf("submission.listeners[%d].proxy_protocol", i),
				"needs submission.proxy_from (the load balancers' addresses); without it every connection is closed")
		}
	}
}

// Warnings lists findings that do not stop the relay but are likely to
// hurt delivery, each with its YAML line like a problem.
func (c *Config) Warnings() []Problem {
	var out []Problem
	if msg := fqdnWarning(c.Hostname); msg != "" {
		p := Problem{Path: "hostname", Msg: msg}
		if c.has("hostname") {
			p.Line = c.Line("hostname")
		} else {
			p.Msg = "not set, so the system host name is used: " + msg
		}
		out = append(out, p)
	}
	out = append(out, c.poolWarnings()...)
	out = append(out, c.daneWarnings()...)
	out = append(out, c.tlsrptWarnings()...)
	out = append(out, c.webhookWarnings()...)
	out = append(out, c.indexMemoryWarning()...)
	return append(out, c.syncWarning()...)
}

// fqdnWarning explains why host is a poor EHLO name, or returns "". The
// EHLO argument is the client's primary host name (RFC 5321 §4.1.1.1), a
// fully qualified domain name (§2.3.5); receivers reject or score bare
// names and addresses.
func fqdnWarning(host string) string {
	h := strings.TrimSuffix(strings.TrimSpace(host), ".")
	switch {
	case h == "":
		return ""
	case net.ParseIP(h) != nil:
		return fmt.Sprintf("%q is an address, not a fully qualified domain name; it is sent in EHLO "+
			"(RFC 5321 §2.3.5) — use a name such as relay.example.com", host)
	case !strings.Contains(h, "."):
		return fmt.Sprintf("%q is not a fully qualified domain name; it is sent in EHLO (RFC 5321 §2.3.5) "+
			"and receivers may refuse or score a bare name — use a name such as relay.example.com", host)
	}
	return ""
}
