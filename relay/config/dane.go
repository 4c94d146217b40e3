package config

import (
	"net"
	"strings"
)

// DANE configures DANE for SMTP (RFC 7672): TLSA records of DNSSEC-secure
// MX hosts make STARTTLS mandatory and pin the certificate. It needs
// delivery.dns.dnssec: trust_ad.
type DANE struct {
	// Enabled: use TLSA records (default true; nothing happens until
	// delivery.dns.dnssec is trust_ad).
	Enabled bool `yaml:"enabled"`
}

// dnssecModes are the values of delivery.dns.dnssec.
var dnssecModes = []string{"off", "trust_ad"}

// TrustAD reports whether the resolvers' AD bit is believed
// (delivery.dns.dnssec: trust_ad).
func (d DNS) TrustAD() bool { return d.DNSSEC == "trust_ad" }

// daneWarnings: DANE configured without trust_ad does nothing; trust_ad
// believes the AD bit, which only a validating resolver on this host (or
// reached over a trusted path) should be trusted for (RFC 7672 §1.3,
// RFC 6698 §4.1).
func (c *Config) daneWarnings() []Problem {
	d := c.Delivery
	var out []Problem
	if !d.DNS.TrustAD() && d.DANE.Enabled && c.has("delivery", "dane") {
		out = append(out, Problem{Path: "delivery.dane.enabled", Line: c.Line("delivery", "dane"),
			Msg: "has no effect until delivery.dns.dnssec is trust_ad (DANE needs DNSSEC-validated answers)"})
	}
	if !d.DNS.TrustAD() {
		return out
	}
	line := c.Line("delivery", "dns", "dnssec")
	if len(d.DNS.Servers) == 0 {
		return append(out, Problem{Path: "delivery.dns.dnssec", Line: line,
			Msg: "trust_ad with no delivery.dns.servers trusts /etc/resolv.conf's servers: name a validating resolver on loopback"})
	}
	var remote []string
	for _, s := range d.DNS.Servers {
		host := s
		if h, _, err := net.SplitHostPort(s); err == nil {
			host = h
		}
		if ip := net.ParseIP(host); ip != nil && !ip.IsLoopback() {
			remote = append(remote, s)
		}
	}
	if len(remote) > 0 {
		out = append(out, Problem{Path: "delivery.dns.dnssec", Line: line,
			Msg: "trust_ad believes the AD bit of resolvers not on loopback (" + strings.Join(remote, ", ") +
				"): anyone on the path can forge it; use a validating resolver on this host"})
	}
	return out
}
