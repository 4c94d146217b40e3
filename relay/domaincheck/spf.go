package domaincheck

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"blitiri.com.ar/go/spf"
)

// probeIP is evaluated to read a whole record: no record names this
// TEST-NET-1 address (RFC 5737 §3), so evaluation runs every term up to
// the all term and finds the syntax and lookup-limit errors a matching
// address would stop before.
var probeIP = net.IPv4(192, 0, 2, 1)

// spfVersion starts an SPF record (RFC 7208 §4.5), case-insensitively.
const spfVersion = "v=spf1"

// spfTarget is one domain whose SPF is checked, and how much its problems
// matter for this relay's mail.
type spfTarget struct {
	domain, role string
	missing      Status // the status of "no record"
	worst        Status // the status of any other problem
}

// checkSPF checks the envelope domains: the sender domain and the VERP
// domain, whose SPF is the one receivers evaluate when VERP is on (then
// the sender domain's problems are warnings); and the EHLO name, the
// identity receivers check for the relay's own DSNs, which have a null
// reverse-path (RFC 7208 §2.3, §2.4).
func (c *checker) checkSPF() {
	targets := []spfTarget{{domain: c.o.Domain, role: "sender domain", missing: Fail, worst: Fail}}
	if v := c.o.VERPDomain; v != "" && v != c.o.Domain {
		targets[0].role += " (with VERP the envelope is in " + v + ")"
		targets[0].missing, targets[0].worst = Warn, Warn
		targets = append(targets, spfTarget{domain: v, role: "VERP envelope domain", missing: Fail, worst: Fail})
	}
	if h := c.o.Hostname; strings.Contains(h, ".") && h != c.o.Domain && h != c.o.VERPDomain {
		targets = append(targets, spfTarget{domain: h, role: "EHLO name, checked for the relay's DSNs",
			missing: Warn, worst: Fail})
	}
	for _, t := range targets {
		c.spfDomain(t)
	}
}

// spfDomain checks t's record as a whole, then for each outbound address.
func (c *checker) spfDomain(t spfTarget) {
	rec, ok := c.spfRecord(t)
	if !ok {
		return
	}
	f := Finding{Check: CheckSPF, Subject: t.domain, Status: OK, Detail: t.role + ": " + rec}
	switch res, err := c.evalSPF(probeIP, t.domain); res {
	case spf.PermError, spf.TempError:
		f.Status, f.Detail, f.Fix = t.worst, t.role+": "+spfErrorText(res, err), spfErrorFix(err)
	case spf.Pass:
		f.Status, f.Detail = Warn, t.role+": authorises every address (+all): anyone can send as "+t.domain
		f.Fix = "end the record with -all (or ~all) and list the relay's addresses"
	case spf.Neutral:
		f.Status, f.Detail = Warn, t.role+": unlisted addresses get neutral (?all or no all term): "+rec
		f.Fix = "end the record with -all (or ~all)"
	}
	c.add(f)
	for _, ip := range c.o.IPs {
		c.spfAddress(t, rec, ip)
	}
}

// spfAddress says whether t's record authorises ip.
func (c *checker) spfAddress(t spfTarget, rec string, ip netip.Addr) {
	d := t.domain
	subject := d + " for " + ip.String()
	res, err := c.evalSPF(net.IP(ip.AsSlice()), d)
	switch res {
	case spf.Pass:
		c.add(Finding{Check: CheckSPF, Subject: subject, Status: OK, Detail: "authorises " + ip.String() + " (pass)"})
	case spf.PermError, spf.TempError:
		c.add(Finding{Check: CheckSPF, Subject: subject, Status: t.worst, Detail: spfErrorText(res, err),
			Fix: spfErrorFix(err)})
	default:
		c.add(Finding{Check: CheckSPF, Subject: subject, Status: t.worst,
			Detail: fmt.Sprintf("does not authorise %s (%s): receivers reject or junk the mail", ip, res),
			Fix:    fmt.Sprintf("add %s to the record: %s. IN TXT %q", spfMechanism(ip), d, spfWith(rec, ip))})
	}
}

// spfRecord returns d's one SPF record, or adds a finding and false.
func (c *checker) spfRecord(t spfTarget) (string, bool) {
	d := t.domain
	fix := fmt.Sprintf("publish %s. IN TXT %q", d, spfWith(spfVersion+" -all", c.o.IPs...))
	txts, err := c.o.Resolver.LookupTXT(c.ctx, d)
	if err != nil && !notFound(err) {
		c.add(Finding{Check: CheckSPF, Subject: d, Status: t.worst, Detail: "lookup failed: " + err.Error(),
			Fix: "make " + d + "'s name servers answer"})
		return "", false
	}
	var recs []string
	for _, t := range txts {
		if l := strings.ToLower(t); l == spfVersion || strings.HasPrefix(l, spfVersion+" ") {
			recs = append(recs, t)
		}
	}
	switch len(recs) {
	case 0:
		c.add(Finding{Check: CheckSPF, Subject: d, Status: t.missing, Detail: "no SPF record", Fix: fix})
		return "", false
	case 1:
		return recs[0], true
	}
	c.add(Finding{Check: CheckSPF, Subject: d, Status: t.worst,
		Detail: fmt.Sprintf("%d SPF records: a permerror for every receiver (RFC 7208 §4.5)", len(recs)),
		Fix:    "merge them into one record"})
	return "", false
}

// evalSPF runs check_host() (RFC 7208 §4) for ip and the postmaster of d
// through the check's resolver.
func (c *checker) evalSPF(ip net.IP, d string) (spf.Result, error) {
	helo := c.o.Hostname
	if helo == "" {
		helo = d
	}
	return spf.CheckHostWithSender(ip, helo, "postmaster@"+d,
		spf.WithResolver(c.o.Resolver), spf.WithContext(c.ctx))
}

// spfErrorText explains a permerror or temperror.
func spfErrorText(res spf.Result, err error) string {
	switch {
	case errors.Is(err, spf.ErrLookupLimitReached):
		return "permerror: more than 10 DNS-querying terms (include, a, mx, ptr, exists, redirect; RFC 7208 §4.6.4)"
	case errors.Is(err, spf.ErrVoidLookupLimitReached):
		return "permerror: more than 2 lookups found nothing (void lookups, RFC 7208 §4.6.4)"
	case errors.Is(err, spf.ErrTooManyMXRecords):
		return "permerror: an mx term names more than 10 MX hosts (RFC 7208 §4.6.4)"
	case res == spf.TempError:
		return fmt.Sprintf("temperror: %v (receivers defer or reject)", err)
	}
	return fmt.Sprintf("permerror: %v (receivers treat the record as broken)", err)
}

// spfErrorFix says what to do about a permerror or temperror.
func spfErrorFix(err error) string {
	switch {
	case errors.Is(err, spf.ErrLookupLimitReached), errors.Is(err, spf.ErrTooManyMXRecords):
		return "replace includes and a/mx terms by ip4:/ip6: terms (flatten) or drop unused includes"
	case errors.Is(err, spf.ErrVoidLookupLimitReached):
		return "remove the terms that name domains without records"
	}
	var de *net.DNSError
	if errors.As(err, &de) && de.IsTemporary {
		return "make the name servers of the record and of every domain it includes answer"
	}
	return "correct the record's syntax (RFC 7208 §12)"
}

// spfMechanism is the ip4:/ip6: term for ip.
func spfMechanism(ip netip.Addr) string {
	if ip.Is4() {
		return "ip4:" + ip.String()
	}
	return "ip6:" + ip.String()
}

// spfWith returns rec with terms for ips inserted after the version.
func spfWith(rec string, ips ...netip.Addr) string {
	terms := make([]string, 0, len(ips))
	for _, ip := range ips {
		terms = append(terms, spfMechanism(ip))
	}
	if len(terms) == 0 {
		terms = append(terms, "ip4:YOUR.PUBLIC.ADDRESS")
	}
	rest := strings.TrimSpace(rec[len(spfVersion):])
	return strings.TrimSpace(spfVersion + " " + strings.Join(terms, " ") + " " + rest)
}
