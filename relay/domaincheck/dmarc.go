package domaincheck

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/emersion/go-msgauth/dmarc"
	"golang.org/x/net/publicsuffix"
)

// dmarcVersion matches the start of a DMARC record (RFC 7489 §6.4: v=DMARC1
// first; records with another start are ignored, §6.6.3).
var dmarcVersion = regexp.MustCompile(`^v\s*=\s*DMARC1\s*(;|$)`)

// dmarcFound is the policy record that applies to the domain.
type dmarcFound struct {
	name   string // where it was found: _dmarc.DOMAIN or _dmarc.ORGDOMAIN
	rec    *dmarc.Record
	policy dmarc.Policy // p, or sp for a subdomain with an org-domain record
}

// checkDMARC checks the policy record and the alignment of the From domain
// with signDomain (the DKIM d=) and the envelope domain.
func (c *checker) checkDMARC(signDomain string) {
	found, ok := c.dmarcRecord()
	adkim, aspf := dmarc.AlignmentMode(dmarc.AlignmentRelaxed), dmarc.AlignmentMode(dmarc.AlignmentRelaxed)
	if ok {
		adkim, aspf = found.rec.DKIMAlignment, found.rec.SPFAlignment
		c.dmarcPolicy(found)
	}
	dkimOK, dkimWhy := aligned(signDomain, c.o.Domain, adkim)
	if signDomain == "" {
		dkimOK, dkimWhy = false, "no DKIM key signs the domain's mail"
	}
	env := c.o.envelopeDomain()
	spfOK, spfWhy := aligned(env, c.o.Domain, aspf)
	dkimF := Finding{Check: CheckDKIMAlignment, Subject: c.o.Domain, Status: OK,
		Detail: "d=" + signDomain + ": " + dkimWhy}
	spfF := Finding{Check: CheckSPFAlignment, Subject: c.o.Domain, Status: OK,
		Detail: "envelope " + env + ": " + spfWhy}
	if !dkimOK {
		dkimF.Status, dkimF.Fix = Warn, "sign with a key of "+c.o.Domain+" (dkim.keys)"
		if adkim == dmarc.AlignmentStrict {
			dkimF.Fix += " or relax the record to adkim=r"
		}
	}
	if !spfOK {
		spfF.Status = Warn
		spfF.Fix = "set bounces.verp_domain to a subdomain of " + orgDomain(c.o.Domain)
		if aspf == dmarc.AlignmentStrict {
			spfF.Fix = "relax the record to aspf=r, or set bounces.verp_domain: " + c.o.Domain
		}
	}
	switch {
	case !dkimOK && !spfOK:
		dkimF.Status, spfF.Status = Fail, Fail
		dkimF.Detail += "; with SPF not aligned either, DMARC fails for every message"
	case !dkimOK:
		dkimF.Detail += "; DMARC passes on SPF alone, which forwarding breaks"
	case !spfOK:
		spfF.Detail += "; DMARC passes on DKIM alone"
	}
	c.add(dkimF)
	c.add(spfF)
}

// dmarcRecord finds the record for the domain, falling back to the
// organizational domain (RFC 7489 §6.6.3), with a finding when there is
// no usable one.
func (c *checker) dmarcRecord() (dmarcFound, bool) {
	names := []string{"_dmarc." + c.o.Domain}
	if org := orgDomain(c.o.Domain); org != c.o.Domain {
		names = append(names, "_dmarc."+org)
	}
	fix := fmt.Sprintf("publish _dmarc.%s. IN TXT \"v=DMARC1; p=none; rua=mailto:dmarc-reports@%s\", "+
		"then p=quarantine or p=reject once the reports show aligned mail", c.o.Domain, c.o.Domain)
	for i, name := range names {
		txts, err := c.o.Resolver.LookupTXT(c.ctx, name)
		if err != nil && !notFound(err) {
			c.add(Finding{Check: CheckDMARC, Subject: name, Status: Fail, Detail: "lookup failed: " + err.Error(),
				Fix: "make the domain's name servers answer"})
			return dmarcFound{}, false
		}
		var recs []string
		for _, t := range txts {
			if dmarcVersion.MatchString(t) {
				recs = append(recs, t)
			}
		}
		switch {
		case len(recs) == 0:
			continue
		case len(recs) > 1:
			c.add(Finding{Check: CheckDMARC, Subject: name, Status: Fail,
				Detail: fmt.Sprintf("%d DMARC records: receivers apply none (RFC 7489 §6.6.3)", len(recs)),
				Fix:    "keep one record"})
			return dmarcFound{}, false
		}
		rec, err := dmarc.Parse(recs[0])
		if err != nil {
			c.add(Finding{Check: CheckDMARC, Subject: name, Status: Fail, Detail: "unusable record: " + err.Error(),
				Fix: fix})
			return dmarcFound{}, false
		}
		f := dmarcFound{name: name, rec: rec, policy: rec.Policy}
		if i > 0 && rec.SubdomainPolicy != "" {
			f.policy = rec.SubdomainPolicy
		}
		return f, true
	}
	c.add(Finding{Check: CheckDMARC, Subject: names[0], Status: Fail,
		Detail: "no DMARC record (large mailbox providers require one from bulk senders)", Fix: fix})
	return dmarcFound{}, false
}

// dmarcPolicy adds the finding about the policy found.
func (c *checker) dmarcPolicy(found dmarcFound) {
	f := Finding{Check: CheckDMARC, Subject: found.name, Status: OK,
		Detail: fmt.Sprintf("p=%s adkim=%s aspf=%s", found.policy, found.rec.DKIMAlignment, found.rec.SPFAlignment)}
	if pct := found.rec.Percent; pct != nil && *pct < 100 {
		f.Detail += fmt.Sprintf(" pct=%d (the policy applies to %d%% of failing mail)", *pct, *pct)
	}
	if len(found.rec.ReportURIAggregate) == 0 {
		f.Detail += "; no rua= tag, so no aggregate reports show who sends as the domain"
	}
	if found.policy == dmarc.PolicyNone {
		f.Status = Warn
		f.Detail += ": monitoring only, receivers take no action on failing mail"
		f.Fix = "move to p=quarantine, then p=reject, once the aggregate reports show only aligned mail"
	}
	c.add(f)
}

// aligned applies RFC 7489 §3.1.1/§3.1.2: strict wants the same domain,
// relaxed the same organizational domain.
func aligned(id, from string, mode dmarc.AlignmentMode) (bool, string) {
	if id == "" {
		return false, "no domain"
	}
	if id == from {
		return true, "aligned (same domain)"
	}
	if mode == dmarc.AlignmentStrict {
		return false, "not aligned: strict alignment wants exactly " + from
	}
	if orgDomain(id) == orgDomain(from) {
		return true, "aligned (relaxed: same organizational domain " + orgDomain(from) + ")"
	}
	return false, "not aligned: organizational domain " + orgDomain(id) + ", not " + orgDomain(from)
}

// orgDomain is the organizational domain (RFC 7489 §3.2) by the public
// suffix list; the domain itself when the list cannot tell.
func orgDomain(d string) string {
	org, err := publicsuffix.EffectiveTLDPlusOne(d)
	if err != nil {
		return d
	}
	return strings.ToLower(org)
}
