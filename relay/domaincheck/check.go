// Package domaincheck answers one operator question: will mail this relay
// sends for a domain pass the receivers' checks? It looks the domain's
// published records up and compares them with what the relay does:
//
//   - SPF (RFC 7208): the envelope domains' records — the sender domain
//     and, with VERP, the VERP domain — must authorise the relay's public
//     outbound addresses, evaluated by blitiri.com.ar/go/spf with its
//     RFC 7208 §4.6.4 limits (10 DNS-mechanism lookups, 2 void lookups).
//   - DKIM (RFC 6376): every configured selector that signs (or is
//     published for) the domain has exactly one record matching its key
//     (dkim.CheckPublished), and the key passes dkim.CheckKeys.
//   - DMARC (RFC 7489): a record at _dmarc.DOMAIN or the organizational
//     domain (parsed by go-msgauth's dmarc package), its policy, and the
//     alignment (§3.1) of the From domain with the DKIM d= domain and the
//     envelope domain, relaxed or strict per adkim/aspf.
//   - The EHLO name: its A/AAAA records and the PTR records of the
//     outbound addresses (forward-confirmed reverse DNS).
//   - MX for bounces: the VERP domain, or the domain itself, must accept
//     mail (RFC 5321 §5.1, RFC 7505).
//
// Every finding is OK, WARN or FAIL with the fix. All DNS goes through the
// Resolver the caller passes (NewResolver wraps the relay's DNS client
// with a query budget and record bounds); the caller bounds the time with
// the context. The relay cannot see its public address behind NAT, so the
// caller names the outbound addresses; without them SPF and reverse DNS
// say what they could not check.
package domaincheck

import (
	"context"
	"net/netip"
	"strings"

	"github.com/jetrelay/jetrelay/dkim"
)

// Status is the verdict of one Finding.
type Status string

// Verdicts.
const (
	OK   Status = "OK"   // as it should be
	Warn Status = "WARN" // works, but weaker than it should be, or not checkable
	Fail Status = "FAIL" // receivers will reject or junk mail, or bounces are lost
)

// Checks, the Check field of a Finding.
const (
	CheckSPF             = "spf"
	CheckDKIM            = "dkim"
	CheckDMARC           = "dmarc"
	CheckDKIMAlignment   = "dmarc_dkim_alignment"
	CheckSPFAlignment    = "dmarc_spf_alignment"
	CheckEHLOForward     = "ehlo_forward"
	CheckEHLOReverse     = "ehlo_reverse"
	CheckBounceMX        = "bounce_mx"
	CheckOutboundAddress = "outbound_address"
)

// Finding is one line of the report.
type Finding struct {
	Check   string `json:"check"`
	Subject string `json:"subject"` // the name or address it is about
	Status  Status `json:"status"`
	Detail  string `json:"detail"`
	Fix     string `json:"fix,omitempty"`
}

// Report is everything Check found, in a fixed order.
type Report struct {
	Domain         string    `json:"domain"`
	EnvelopeDomain string    `json:"envelope_domain"`
	Hostname       string    `json:"hostname"`
	IPs            []string  `json:"ips"`
	IPSource       string    `json:"ip_source,omitempty"`
	Findings       []Finding `json:"findings"`
}

// Failed reports whether any finding is a FAIL.
func (r *Report) Failed() bool {
	for _, f := range r.Findings {
		if f.Status == Fail {
			return true
		}
	}
	return false
}

// Options say what to check and what the relay does.
type Options struct {
	// Domain is the sending (header From) domain.
	Domain string
	// IPs are the relay's public outbound addresses; IPSource says where
	// they came from ("--ip", "delivery.source_ip") for the report.
	IPs      []netip.Addr
	IPSource string
	// Hostname is the EHLO name (config hostname).
	Hostname string
	// VERPDomain is bounces.verp_domain: when set, the envelope sender on
	// the wire is in it, and bounces come back to it.
	VERPDomain string
	// Keys are the configured DKIM keys (all of them; Check picks the ones
	// for Domain), ParentDomains is dkim.parent_domains.
	Keys          []dkim.KeySpec
	ParentDomains bool
	// Resolver answers every DNS question.
	Resolver Resolver
}

// checker carries one Check run.
type checker struct {
	o   Options
	ctx context.Context
	rep *Report
}

// add appends a finding.
func (c *checker) add(f Finding) { c.rep.Findings = append(c.rep.Findings, f) }

// Check runs every check for o.Domain. It returns a report even when
// lookups fail (they are findings); ctx bounds the time.
func Check(ctx context.Context, o Options) *Report {
	o.Domain = normalize(o.Domain)
	o.Hostname = normalize(o.Hostname)
	o.VERPDomain = normalize(o.VERPDomain)
	rep := &Report{Domain: o.Domain, EnvelopeDomain: o.envelopeDomain(), Hostname: o.Hostname,
		IPSource: o.IPSource, IPs: []string{}, Findings: []Finding{}}
	c := &checker{o: o, ctx: ctx, rep: rep}
	c.o.IPs = c.publicIPs()
	for _, ip := range c.o.IPs {
		rep.IPs = append(rep.IPs, ip.String())
	}
	c.checkSPF()
	signDomain := c.checkDKIM()
	c.checkDMARC(signDomain)
	c.checkEHLO()
	c.checkBounceMX()
	return rep
}

// envelopeDomain is the domain of the envelope sender on the wire.
func (o Options) envelopeDomain() string {
	if o.VERPDomain != "" {
		return o.VERPDomain
	}
	return o.Domain
}

// publicIPs keeps the addresses a receiver can see, with a finding for
// each one it drops and one when none is known.
func (c *checker) publicIPs() []netip.Addr {
	var out []netip.Addr
	for _, ip := range c.o.IPs {
		ip = ip.Unmap()
		if ip.IsGlobalUnicast() && !ip.IsPrivate() {
			out = append(out, ip)
			continue
		}
		c.add(Finding{Check: CheckOutboundAddress, Subject: ip.String(), Status: Warn,
			Detail: "not a public address (" + c.o.IPSource + "); receivers see the address it is translated to",
			Fix:    "name the public outbound address with --ip ADDR"})
	}
	if len(out) == 0 && len(c.o.IPs) == 0 {
		c.add(Finding{Check: CheckOutboundAddress, Subject: "-", Status: Warn,
			Detail: "the relay's public outbound address is not known, so SPF and reverse DNS cannot be matched to it",
			Fix:    "pass --ip ADDR (repeatable) or set delivery.source_ip"})
	}
	return out
}

// normalize lower-cases a domain and drops the final dot.
func normalize(d string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d)), ".")
}
