package submit

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/jetrelay/jetrelay/relay/dnsclient"
	"github.com/jetrelay/jetrelay/relay/dnsname"
	"github.com/miekg/dns"
	"github.com/rs/zerolog"
)

// The recipient domain checked at RCPT (issue 18, point 6;
// bounces.verify_domains).
//
// With the check on, RCPT looks the recipient's domain up the way
// delivery will (RFC 5321 §5.1) through the same servers
// (delivery.dns): a null MX (RFC 7505 §3: the only MX is ".") is refused
// 556 5.1.10, NXDOMAIN 550 5.1.2, a name with neither MX nor A/AAAA
// records 550 5.1.2 — the application learns at once, and the bounce it
// would otherwise get later does not count against its bounce rate. A
// timeout, SERVFAIL or any other failed lookup accepts the recipient:
// delivery decides later, with its retries. Domains that delivery.routes
// send to a smarthost are not looked up (they may not be in public DNS).
//
// The whole check of one domain gets rcptDomainTimeout, so a slow DNS
// holds RCPT at most that long; after a timeout the lookups of every
// domain are skipped for rcptDomainPause (one slow RCPT, not one per
// recipient), with a rcpt_domain_unverified line at most every 10 s.
//
// Verdicts are cached in this process: rcptDomainOK for a domain that
// takes mail, rcptDomainBad for a refused one (a domain whose DNS gets
// fixed is accepted again soon), rcptDomainUnknown after a failed lookup,
// at most rcptDomainEntries domains. Per node is right here: it is a DNS
// cache, whose answers every node would get alike from its resolver, not
// a limit or a state that must hold across nodes; concurrent RCPTs for one
// domain share one lookup.
const (
	rcptDomainTimeout = 3 * time.Second
	rcptDomainPause   = 5 * time.Second
	rcptDomainOK      = 10 * time.Minute
	rcptDomainBad     = 5 * time.Minute
	rcptDomainUnknown = 30 * time.Second
	rcptDomainEntries = 10000
	// readRcptDomain names the check in policy-read logs and metrics.
	readRcptDomain = "rcpt_domain"
)

// DNSQuerier asks DNS questions (*dnsclient.Client implements it): an
// answer is NOERROR or NXDOMAIN (read its Rcode), anything else an error.
type DNSQuerier interface {
	Query(ctx context.Context, name string, qtype uint16) (*dns.Msg, error)
}

// domainVerdict is a cached result: reject nil accepts.
type domainVerdict struct {
	reject *smtp.SMTPError
	until  time.Time
}

// domainCall is one lookup in progress, shared by concurrent RCPTs.
type domainCall struct {
	done chan struct{}
	v    *smtp.SMTPError
}

// domainVerifier checks recipient domains; nil checks nothing.
type domainVerifier struct {
	dns     DNSQuerier
	servers []string // what dns was built from (reuse on reload)
	timeout time.Duration
	routed  map[string]bool // delivery.routes domains; "*" = all
	log     zerolog.Logger
	now     func() time.Time

	fails   readFailures
	mu      sync.Mutex
	cache   map[string]domainVerdict
	pending map[string]*domainCall
}

// domainVerifierOptions build a domainVerifier from the settings.
type domainVerifierOptions struct {
	Settings Settings
	Log      zerolog.Logger
	Prev     *domainVerifier // kept when the DNS settings did not change
}

// newDomainVerifier returns nil when bounces.verify_domains is off, else
// a verifier over delivery.dns (prev's client and cache when those
// servers and timeout did not change).
func newDomainVerifier(o domainVerifierOptions) (*domainVerifier, error) {
	set := o.Settings
	if !set.VerifyDomains {
		return nil, nil
	}
	v := &domainVerifier{servers: set.DNS.Servers, timeout: set.DNS.Timeout.D(), routed: map[string]bool{},
		log: o.Log, now: time.Now, cache: map[string]domainVerdict{}, pending: map[string]*domainCall{}}
	for _, d := range set.Routed {
		v.routed[strings.ToLower(d)] = true
	}
	if p := o.Prev; p != nil && slices.Equal(p.servers, v.servers) && p.timeout == v.timeout {
		v.dns, v.cache = p.dns, p.cacheCopy()
		return v, nil
	}
	c, err := dnsclient.New(dnsclient.Options{Servers: set.DNS.Servers, Timeout: set.DNS.Timeout.D()})
	if err != nil {
		return nil, err
	}
	v.dns = c
	return v, nil
}

// cacheCopy is the cache for a reloaded verifier (routes may differ;
// verdicts do not depend on them).
func (v *domainVerifier) cacheCopy() map[string]domainVerdict {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make(map[string]domainVerdict, len(v.cache))
	for k, d := range v.cache {
		out[k] = d
	}
	return out
}

// check returns the refusal for domain (lower-case, an IDN as given), or
// nil to accept. An IDN is looked up by its A-labels (RFC 5890), as
// delivery does; one that has none is left to delivery.
func (v *domainVerifier) check(domain string, obs Observer) *smtp.SMTPError {
	if v == nil || v.routed["*"] || v.routed[domain] {
		return nil
	}
	domain, err := dnsname.ToASCII(domain)
	if err != nil || v.routed[domain] {
		return nil
	}
	now := v.now()
	v.mu.Lock()
	if d, ok := v.cache[domain]; ok && now.Before(d.until) {
		v.mu.Unlock()
		return d.reject
	}
	if c := v.pending[domain]; c != nil {
		v.mu.Unlock()
		<-c.done
		return c.v
	}
	c := &domainCall{done: make(chan struct{})}
	v.pending[domain] = c
	v.mu.Unlock()

	reject, ttl := v.lookupOnce(domain, obs)
	c.v = reject
	v.mu.Lock()
	delete(v.pending, domain)
	v.store(domain, domainVerdict{reject: reject, until: v.now().Add(ttl)})
	v.mu.Unlock()
	close(c.done)
	return reject
}

// store caches one verdict, making room when the cache is full: the
// expired entries go, and if that is not enough, arbitrary ones.
func (v *domainVerifier) store(domain string, d domainVerdict) {
	if len(v.cache) >= rcptDomainEntries {
		now := v.now()
		for k, e := range v.cache {
			if !now.Before(e.until) {
				delete(v.cache, k)
			}
		}
		for k := range v.cache {
			if len(v.cache) < rcptDomainEntries*9/10 {
				break
			}
			delete(v.cache, k)
		}
	}
	v.cache[domain] = d
}

// lookupOnce runs one bounded lookup (unless a recent timeout pauses
// them) and returns the verdict and how long to keep it.
func (v *domainVerifier) lookupOnce(domain string, obs Observer) (*smtp.SMTPError, time.Duration) {
	start := v.now()
	if v.fails.paused(start) {
		v.unverified(domain, errRcptDomainPaused, 0, obs)
		return nil, 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), rcptDomainTimeout)
	defer cancel()
	reject, err := lookupDomain(ctx, v.dns, domain)
	switch {
	case err != nil:
		pause := time.Duration(0)
		if isDNSTimeout(err) || ctx.Err() != nil {
			pause = rcptDomainPause
		}
		v.unverified(domain, err, pause, obs)
		return nil, rcptDomainUnknown
	case reject != nil:
		return reject, rcptDomainBad
	}
	return nil, rcptDomainOK
}

var errRcptDomainPaused = errors.New("skipped: a recipient domain lookup timed out moments ago")

// unverified counts and logs (rate-limited) a recipient accepted without
// a verdict; pause > 0 skips the lookups for that long.
func (v *domainVerifier) unverified(domain string, err error, pause time.Duration, obs Observer) {
	if o, ok := obs.(PolicyReadObserver); ok {
		o.ObservePolicyReadFailed(readRcptDomain)
	}
	logIt, unlogged := v.fails.failed(v.now(), pause)
	if !logIt {
		return
	}
	v.log.Warn().Err(err).Str("event", "rcpt_domain_unverified").Str("domain", domain).
		Int("unlogged_failures", unlogged).Msg("recipient domain lookup failed; recipient accepted (delivery decides)")
}

func isDNSTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// lookupDomain asks for domain's MX records, and for A and AAAA when it
// has none (RFC 5321 §5.1 implicit MX). It returns the refusal, nil when
// the domain takes mail, or the error of a lookup without an answer.
func lookupDomain(ctx context.Context, q DNSQuerier, domain string) (*smtp.SMTPError, error) {
	in, err := q.Query(ctx, domain, dns.TypeMX)
	if err != nil {
		return nil, err
	}
	if in.Rcode == dns.RcodeNameError {
		return errRcptNXDomain, nil
	}
	var mxs []string
	for _, rr := range in.Answer {
		if mx, ok := rr.(*dns.MX); ok {
			mxs = append(mxs, mx.Mx)
		}
	}
	switch {
	case len(mxs) == 1 && (mxs[0] == "." || mxs[0] == ""): // RFC 7505 §3, as delivery reads it
		return errRcptNullMX, nil
	case len(mxs) > 0:
		return nil, nil
	}
	for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
		in, err := q.Query(ctx, domain, qt)
		if err != nil {
			return nil, err
		}
		for _, rr := range in.Answer {
			if rr.Header().Rrtype == qt {
				return nil, nil
			}
		}
	}
	return errRcptNoHost, nil
}
