package submit

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/jetrelay/jetrelay/relay/config"
	"golang.org/x/crypto/bcrypt"
)

// policy is one immutable snapshot of everything Prepare may change. Sessions
// load the current snapshot per command; a reload never disturbs a command
// in progress.
type policy struct {
	sub   config.Submission
	users map[string]*userPolicy
	// trustedNets are never banned by the auth brake.
	trustedNets []netip.Prefix
	// dummyHash is checked for unknown users, at the highest cost among the
	// configured hashes, so that timing does not reveal which names exist.
	dummyHash []byte
}

// userPolicy is one submission user, parsed.
type userPolicy struct {
	name    string
	hash    []byte
	anyFrom bool
	domains map[string]bool
	addrs   map[string]bool
	limiter *userLimit // cluster-wide rate (ratekv.go); nil = unlimited
	creds   *credCache // passwords bcrypt accepted (authcache.go)
}

// newPolicy parses sub's users. Their rates are limited through rates,
// which outlives snapshots: a reload neither refills nor drains anyone's
// budget, and a changed rate applies from the user's next lease.
func newPolicy(sub config.Submission, prev *policy, rates *Rates) (*policy, error) {
	p := &policy{sub: sub, users: make(map[string]*userPolicy, len(sub.Users))}
	var errs []error
	cost := bcrypt.MinCost
	for i, u := range sub.Users {
		c, err := bcrypt.Cost([]byte(u.PasswordHash))
		if err != nil {
			errs = append(errs, fmt.Errorf("submission.users[%d] (%s): password_hash is not a bcrypt hash: %v", i, u.Name, err))
			continue
		}
		cost = max(cost, c)
		up := &userPolicy{name: u.Name, hash: []byte(u.PasswordHash), limiter: rates.limiter(u.Name, u.Rate),
			domains: map[string]bool{}, addrs: map[string]bool{}, creds: newCredCache()}
		for _, a := range u.AllowedFrom {
			a = strings.ToLower(strings.TrimSpace(a))
			switch {
			case a == "*":
				up.anyFrom = true
			case strings.Contains(a, "@"):
				up.addrs[a] = true
			default:
				up.domains[strings.TrimPrefix(a, "@")] = true
			}
		}
		p.users[u.Name] = up
	}
	for i, n := range sub.TrustedNetworks {
		pfx, err := config.ParseNetwork(n)
		if err != nil {
			errs = append(errs, fmt.Errorf("submission.trusted_networks[%d]: %q is not a CIDR prefix", i, n))
			continue
		}
		p.trustedNets = append(p.trustedNets, pfx)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if len(sub.Users) == 0 {
		cost = bcrypt.DefaultCost
	}
	if prev != nil && prev.dummyCost() == cost {
		p.dummyHash = prev.dummyHash
		return p, nil
	}
	var err error
	p.dummyHash, err = bcrypt.GenerateFromPassword([]byte(randomHex(16)), cost)
	return p, err
}

// trusted reports whether ip is in submission.trusted_networks.
func (p *policy) trusted(ip string) bool {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	a = a.Unmap()
	for _, n := range p.trustedNets {
		if n.Contains(a) {
			return true
		}
	}
	return false
}

func (p *policy) user(name string) *userPolicy {
	if p == nil {
		return nil
	}
	return p.users[name]
}

// allows reports whether the user may use addr (already checked syntax) as
// sender: "*", the exact address, or its domain, all case-insensitive.
// A listed domain does not cover its subdomains.
func (u *userPolicy) allows(addr string) bool {
	if u.anyFrom {
		return true
	}
	addr = strings.ToLower(addr)
	if u.addrs[addr] {
		return true
	}
	at := strings.LastIndexByte(addr, '@')
	return at >= 0 && u.domains[addr[at+1:]]
}

func (p *policy) dummyCost() int {
	c, _ := bcrypt.Cost(p.dummyHash)
	return c
}
