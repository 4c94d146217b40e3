package smtpclient

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jetrelay/jetrelay/relay/dnsname"
	"github.com/rs/zerolog"
)

// Host is one server to try: its name (an MX host or a smarthost; "" for a
// smarthost given as an IP) and its addresses, each of which is tried.
type Host struct {
	Name string
	IPs  []net.IP
	Port int
	// DANE holds the host's usable TLSA records (RFC 7672): STARTTLS is
	// mandatory and the certificate must match them. Nil: no DANE.
	DANE []TLSA
	// TLSABase is the TLSA base domain when it is not Name: the
	// CNAME-expanded host name (RFC 7672 §2.2.2).
	TLSABase string
}

// Plan says how to talk to a destination's hosts.
type Plan struct {
	TLS           string // "none" | "starttls" | "implicit"
	RequireTLS    bool   // no TLS session → try the next host, then defer
	Verify        bool   // the certificate must be valid for the host name (in the handshake)
	PlainFallback bool   // opportunistic: a failed handshake → plaintext to the same address
	User, Pass    string // AUTH PLAIN when User != ""
	// ServerName overrides the name the certificate is checked against.
	ServerName string
	// Name overrides PolicyName in the delivery log ("mta-sts", ...).
	Name string
}

// PolicyName names the TLS policy the plan carries out in the delivery
// log's tls_policy (issue 17's names): Name when set (dane, mta-sts,
// mta-sts-testing, configured), else none, configured for a plan that
// requires TLS (a delivery.tls.default of required or verify, a smarthost
// route) or opportunistic. Whether the certificate was checked is
// tls_verified's business, not the name's.
func (p Plan) PolicyName() string {
	switch {
	case p.Name != "":
		return p.Name
	case p.TLS == "none":
		return string(PolicyNone)
	case p.RequireTLS:
		return PolicyNameConfigured
	}
	return string(PolicyOpportunistic)
}

// Transport is one way of reaching a destination. MX delivery and
// smarthost routes are its two implementations.
type Transport interface {
	// Key identifies the destination: entries with equal keys share
	// connections, concurrency limits and the circuit breaker.
	Key() string
	// Hosts returns the hosts to try, in order. Failures are *Error or
	// *DNSError values that Classify understands (null MX and NXDOMAIN are
	// permanent; everything else temporary).
	Hosts(ctx context.Context) ([]Host, error)
	// Plan says how to talk to the hosts.
	Plan() Plan

	// limited: the attempt budget's address limit applies (MX delivery).
	limited() bool
	// dialer is the Dialer for this transport's connections.
	dialer(c *Client) Dialer
}

// mxTransport delivers to a recipient domain's MX hosts (RFC 5321 §5.1).
type mxTransport struct {
	domain  string // A-labels
	plan    Plan
	port    int
	res     Resolver
	warn    *warnOnce
	dane    bool  // look up TLSA for DNSSEC-secure MX hosts (Options.DANE)
	invalid error // the domain cannot be looked up: Hosts fails with it
	// sts gives the MTA-STS policy (nil: none); configured: the domain
	// has its own delivery.tls.domains entry; stsSt: the decision (sts.go).
	sts        STSSource
	configured bool
	stsSt      atomic.Pointer[stsState]
}

// MX returns the Transport for MX delivery to domain (an A-label or ASCII
// name) under its TLS policy from Options.Policies. A REQUIRETLS message
// always needs an authenticated certificate (RFC 8689 §4.2.1), whatever
// the policy. The error is the policy store's.
//
// An internationalised domain is looked up as A-labels (IDNA2008, RFC 5891
// §5: bücher.example → xn--bcher-kva.example); a name that cannot be
// converted fails with 550 5.1.2 without a lookup.
func (c *Client) MX(ctx context.Context, domain string, requireTLS bool) (Transport, error) {
	ascii, err := dnsname.ToASCII(domain)
	if err != nil {
		invalid := newError(withCause(replyBadDomain, err.Error()), false, err)
		return &mxTransport{domain: strings.ToLower(domain), invalid: invalid}, nil
	}
	domain = ascii
	pol, err := c.o.Policies.TLSPolicy(ctx, domain)
	if err != nil {
		return nil, err
	}
	t := &mxTransport{domain: domain, plan: PlanFor(pol), port: c.o.Port, res: c.o.Resolver, warn: c.warn,
		dane: c.o.DANE, sts: c.o.STS, configured: configuredDomain(c.o.Policies, domain)}
	if t.configured {
		t.plan.Name = PolicyNameConfigured
	}
	if requireTLS { // on top of the domain's policy, not a level: the name stays
		name := t.plan.PolicyName()
		t.plan = PlanFor(PolicyVerify)
		t.plan.Name = name
	}
	return t, nil
}

func (t *mxTransport) limited() bool           { return true }
func (t *mxTransport) dialer(c *Client) Dialer { return c.o.mxDialer() }

func (t *mxTransport) Key() string {
	k := "mx:" + t.domain + "|" + t.plan.TLS
	if t.plan.Verify {
		k += "|verify"
	} else if t.plan.RequireTLS {
		k += "|required"
	}
	return k
}

func (t *mxTransport) Plan() Plan {
	if st := t.stsSt.Load(); st != nil {
		return st.plan
	}
	return t.plan
}

// Hosts looks up the MX records: preference order with equal preferences
// shuffled; no MX → the domain itself (implicit MX); null MX → 5.1.10;
// IP-literal MX names are skipped; CNAME targets are followed with a warning.
// Under an MTA-STS enforce policy only the hosts it names are kept, and
// the hosts with usable TLSA records: DANE outranks MTA-STS (issue 17).
func (t *mxTransport) Hosts(ctx context.Context) ([]Host, error) {
	if t.invalid != nil {
		return nil, t.invalid
	}
	t.applySTS(ctx)
	hosts, err := t.lookupHosts(ctx)
	if err != nil {
		return nil, err
	}
	return t.stsHosts(hosts)
}

// routeTransport delivers through a configured smarthost.
type routeTransport struct {
	key  string
	host string // name or IP
	port int
	plan Plan
	res  Resolver
}

// Route describes a smarthost.
type Route struct {
	// Key identifies the route (destinations with equal keys share
	// connections and limits).
	Key  string
	Host string // name or IP
	Port int
	Plan Plan
}

// Route returns the Transport for a smarthost. Its addresses are the
// operator's choice: the attempt's address limit and the network guard of
// Options.MXDialer do not apply.
func (c *Client) Route(r Route) Transport {
	return &routeTransport{key: r.Key, host: r.Host, port: r.Port, plan: r.Plan, res: c.o.Resolver}
}

func (t *routeTransport) Key() string             { return t.key }
func (t *routeTransport) Plan() Plan              { return t.plan }
func (t *routeTransport) limited() bool           { return false }
func (t *routeTransport) dialer(c *Client) Dialer { return c.o.Dialer }

// Hosts resolves the smarthost through the same resolver. A smarthost that
// does not resolve is our configuration problem, so it is never permanent.
func (t *routeTransport) Hosts(ctx context.Context) ([]Host, error) {
	if ip := net.ParseIP(t.host); ip != nil {
		return []Host{{IPs: []net.IP{ip}, Port: t.port}}, nil
	}
	a, err := t.res.LookupIP(ctx, t.host)
	if err != nil {
		var de *DNSError
		if errors.As(err, &de) {
			return nil, &DNSError{Name: de.Name, Type: de.Type, Kind: DNSTemporary,
				Err: errors.New("smarthost does not resolve")}
		}
		return nil, err
	}
	if len(a.IPs) == 0 {
		return nil, newError(withCause(replyNoUsableMX, "smarthost "+t.host+" has no address"), false, nil)
	}
	return []Host{{Name: t.host, IPs: a.IPs, Port: t.port}}, nil
}

// warnOnce rate-limits repeated warnings (MX configuration problems are
// seen on every delivery while the answer is cached).
type warnOnce struct {
	log  zerolog.Logger
	mu   sync.Mutex
	last map[string]time.Time
}

func (w *warnOnce) Warn(key string, f func(zerolog.Logger)) {
	w.mu.Lock()
	if w.last == nil {
		w.last = map[string]time.Time{}
	}
	if t, ok := w.last[key]; ok && time.Since(t) < time.Hour {
		w.mu.Unlock()
		return
	}
	if len(w.last) > 10000 {
		clear(w.last)
	}
	w.last[key] = time.Now()
	w.mu.Unlock()
	f(w.log)
}
