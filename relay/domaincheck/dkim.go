package domaincheck

import (
	"context"
	"fmt"
	"strings"

	"github.com/jetrelay/jetrelay/dkim"
)

// checkDKIM checks the keys that sign mail from the domain (the domain's
// own, or with parent_domains the nearest parent's, as dkim.Signer picks
// them) and the domain's published-only keys. It returns the d= domain the
// relay signs with, "" when none.
func (c *checker) checkDKIM() string {
	signing, signDomain := c.signingKeys()
	specs := append([]dkim.KeySpec(nil), signing...)
	for _, k := range c.o.Keys {
		if normalize(k.Domain) == c.o.Domain && !k.Sign {
			specs = append(specs, k)
		}
	}
	if signDomain == "" {
		c.add(Finding{Check: CheckDKIM, Subject: c.o.Domain, Status: Fail,
			Detail: "no DKIM key signs mail from " + c.o.Domain + ": it goes out unsigned",
			Fix: "jetrelay dkim keygen --domain " + c.o.Domain + " --selector s1 --out FILE, " +
				"add it to dkim.keys and publish the record it prints"})
	}
	r := txtResolver{c.o.Resolver}
	for _, spec := range specs {
		c.dkimKey(r, spec)
	}
	// The key rules serve's signer applies; its errors (an unreadable
	// key) already showed as lookup errors above.
	for _, f := range dkim.CheckKeys(specs) {
		if f.Severity == dkim.Warning {
			c.add(Finding{Check: CheckDKIM, Subject: dkimName(specs[f.Key]), Status: Warn, Detail: f.Err.Error(),
				Fix: "see jetrelay check --config FILE"})
		}
	}
	return signDomain
}

// dkimKey adds the finding of one key's published record.
func (c *checker) dkimKey(r txtResolver, spec dkim.KeySpec) {
	pc := dkim.CheckPublished(c.ctx, r, spec)
	f := Finding{Check: CheckDKIM, Subject: pc.Name, Status: OK}
	use := "signs"
	if !spec.Sign {
		use = "published only (sign: false)"
	}
	switch pc.State {
	case dkim.Published:
		f.Detail = fmt.Sprintf("matches the %s key in %s (%s)", pc.Key, spec.KeyFile, use)
	case dkim.NotFound:
		f.Status, f.Detail, f.Fix = Fail, "no record: receivers fail the signature ("+use+")", "publish "+pc.Want
	case dkim.Mismatch:
		f.Status, f.Detail = Fail, "does not match "+spec.KeyFile+": "+pc.Detail
		f.Fix = "replace the record by " + pc.Want
	default:
		f.Status, f.Detail = Fail, pc.Detail
		f.Fix = "make the key readable (jetrelay check) and the name servers answer"
	}
	if f.Status == Fail && !spec.Sign {
		f.Status = Warn // it signs nothing yet
	}
	c.add(f)
}

// signingKeys returns the keys dkim.Signer would sign the domain's mail
// with and their d= domain, walking up to parents with ParentDomains.
func (c *checker) signingKeys() ([]dkim.KeySpec, string) {
	for d := c.o.Domain; d != ""; {
		var keys []dkim.KeySpec
		for _, k := range c.o.Keys {
			if normalize(k.Domain) == d && k.Sign {
				keys = append(keys, k)
			}
		}
		if len(keys) > 0 {
			return keys, d
		}
		_, parent, ok := strings.Cut(d, ".")
		if !c.o.ParentDomains || !ok || !strings.Contains(parent, ".") {
			break
		}
		d = parent
	}
	return nil, ""
}

// dkimName is a key's record name without the final dot.
func dkimName(spec dkim.KeySpec) string {
	return strings.TrimSuffix(dkim.RecordName(spec.Selector, normalize(spec.Domain)), ".")
}

// txtResolver is dkim's TXT lookup over the check's Resolver.
type txtResolver struct{ r Resolver }

func (t txtResolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	txts, err := t.r.LookupTXT(ctx, name)
	if notFound(err) {
		return nil, fmt.Errorf("%s: %w", name, dkim.ErrNoRecord)
	}
	return txts, err
}
