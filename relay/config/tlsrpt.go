package config

import (
	"strings"
)

// TLSRPT configures SMTP TLS Reporting (RFC 8460): counts of successful
// and failed TLS sessions per recipient policy domain, kept cluster-wide
// in the JetStream KV bucket jetrelay_tlsrpt, and one report a day to
// every domain that publishes a _smtp._tls record.
type TLSRPT struct {
	// Enabled: count sessions and send the daily reports (default true).
	Enabled bool `yaml:"enabled"`
	// From is the reports' From: address and envelope sender (default
	// tlsrpt@<hostname>); its domain needs a DKIM signing key (dkim.keys)
	// for reports by mail (RFC 8460 §5.3).
	From string `yaml:"from"`
	// OrgName is the report's organization-name (default: the hostname).
	OrgName string `yaml:"org_name"`
	// Contact is the report's contact-info (default: the From address).
	Contact string `yaml:"contact"`
}

// TLSRPTFrom returns delivery.tls_rpt.from, or tlsrpt@<hostname>.
func (c *Config) TLSRPTFrom() string {
	if f := strings.TrimSpace(c.Delivery.TLSRPT.From); f != "" {
		return f
	}
	return "tlsrpt@" + c.Hostname
}

// validateTLSRPT: from must be an address, and when it is set and
// reports are enabled its domain must have a DKIM signing key: reports by
// mail must be DKIM-signed (RFC 8460 §5.3).
func (c *Config) validateTLSRPT(ps *problems) {
	t := c.Delivery.TLSRPT
	from := c.TLSRPTFrom()
	at := strings.LastIndexByte(from, '@')
	if at <= 0 || at == len(from)-1 || strings.ContainsAny(from, " \t\r\n<>") {
		ps.add("delivery.tls_rpt.from", "%q is not an address", from)
		return
	}
	if t.Enabled && strings.TrimSpace(t.From) != "" && !c.DKIMSigns(from[at+1:]) {
		ps.add("delivery.tls_rpt.from", "no dkim.keys entry signs for %s: TLS-RPT reports by mail must be DKIM-signed (RFC 8460 §5.3)",
			from[at+1:])
	}
}

// tlsrptWarnings: with the default from (tlsrpt@<hostname>) and DKIM keys
// configured, none of which signs for the hostname's domain, reports go
// only to https endpoints. (Without any key that is also so, but a relay
// that signs nothing is not warned about reports it cannot sign.)
func (c *Config) tlsrptWarnings() []Problem {
	t := c.Delivery.TLSRPT
	if !t.Enabled || strings.TrimSpace(t.From) != "" || len(c.DKIM.Keys) == 0 || c.DKIMSigns(c.Hostname) {
		return nil
	}
	p := Problem{Path: "delivery.tls_rpt.from",
		Msg: "not set, and no dkim.keys entry signs for " + c.Hostname + ": TLS-RPT reports are not sent by mail " +
			"(RFC 8460 §5.3 wants them DKIM-signed); set from to an address of a signed domain"}
	if c.has("delivery", "tls_rpt") {
		p.Line = c.Line("delivery", "tls_rpt")
	}
	return []Problem{p}
}

// DKIMSigns reports whether a signing key of dkim.keys covers mail From:
// domain (a parent domain's key too with dkim.parent_domains).
func (c *Config) DKIMSigns(domain string) bool {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	for _, k := range c.DKIM.Keys {
		if !k.Signs() {
			continue
		}
		kd := strings.ToLower(strings.TrimSuffix(k.Domain, "."))
		if kd == domain || c.DKIM.ParentDomains && strings.Contains(kd, ".") && strings.HasSuffix(domain, "."+kd) {
			return true
		}
	}
	return false
}
