package smtpclient

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/relay/dnsclient"
	"github.com/miekg/dns"
)

// MX is one MX record: a mail exchanger and its preference (RFC 5321 §5.1).
// Host "" is the null MX "." of RFC 7505.
type MX struct {
	Host string
	Pref uint16
	// Secure: the answer carried the AD bit of a trusted validating
	// resolver (DNSOptions.TrustAD; RFC 7672 §2.2.1).
	Secure bool
}

// HostAddrs are the addresses of a host name.
type HostAddrs struct {
	IPs []net.IP
	// CNAME is the canonical name when the looked-up name was an alias.
	CNAME string
	TTL   time.Duration
	// Secure: every answer carried the AD bit (DNSOptions.TrustAD).
	Secure bool
}

// Resolver answers the DNS questions delivery asks. Implementations must be
// safe for concurrent use.
type Resolver interface {
	// LookupMX returns domain's MX records (in any order) and how long they
	// may be cached. A domain that exists without MX records returns no
	// records and a nil error (implicit MX, RFC 5321 §5.1). A failure is
	// a *DNSError: Kind DNSNotFound for NXDOMAIN, DNSTemporary otherwise.
	LookupMX(ctx context.Context, domain string) ([]MX, time.Duration, error)
	// LookupIP returns the IPv4 and IPv6 addresses of host, following
	// CNAMEs. A name without addresses returns none and a nil error;
	// failures are *DNSError as for LookupMX.
	LookupIP(ctx context.Context, host string) (HostAddrs, error)
}

// DNSErrorKind says whether a DNS failure is final.
type DNSErrorKind int

// DNS failure kinds.
const (
	DNSTemporary DNSErrorKind = iota // SERVFAIL, REFUSED, timeout: retry later
	DNSNotFound                      // NXDOMAIN: the name does not exist
)

// DNSError is a failed lookup.
type DNSError struct {
	Name string
	Type string // "MX", "A", "AAAA"
	Kind DNSErrorKind
	Err  error
}

func (e *DNSError) Error() string {
	if e.Kind == DNSNotFound {
		return fmt.Sprintf("%s lookup of %s: NXDOMAIN", e.Type, e.Name)
	}
	return fmt.Sprintf("%s lookup of %s: %v", e.Type, e.Name, e.Err)
}

func (e *DNSError) Unwrap() error { return e.Err }

func (e *DNSError) reply() Reply {
	if e.Kind == DNSNotFound {
		return replyNXDomain
	}
	return replyDNSTemp
}

// DNSOptions configure NewResolver (servers, timeout, loopback-only).
type DNSOptions = dnsclient.Options

// dnsResolver is the miekg/dns Resolver (relay/dnsclient: the configured
// servers in order, UDP with a TCP retry on truncation).
type dnsResolver struct {
	c *dnsclient.Client
}

// NewResolver returns a Resolver that asks o.Servers (or resolv.conf's).
func NewResolver(o DNSOptions) (Resolver, error) {
	c, err := dnsclient.New(o)
	if err != nil {
		return nil, err
	}
	return &dnsResolver{c: c}, nil
}

func (r *dnsResolver) query(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	return r.c.Query(ctx, name, qtype)
}

func (r *dnsResolver) LookupMX(ctx context.Context, domain string) ([]MX, time.Duration, error) {
	mxs, _, ttl, err := r.lookupMXSecure(ctx, domain)
	return mxs, ttl, err
}

// lookupMXSecure is LookupMX that also says whether the answer was
// DNSSEC-secure, which for an answer without records is a secure denial
// of the MX RRset (RFC 7672 §2.2.1: DANE for the implicit MX).
func (r *dnsResolver) lookupMXSecure(ctx context.Context, domain string) ([]MX, bool, time.Duration, error) {
	in, err := r.query(ctx, domain, dns.TypeMX)
	if err != nil {
		return nil, false, 0, &DNSError{Name: domain, Type: "MX", Kind: DNSTemporary, Err: err}
	}
	if in.Rcode == dns.RcodeNameError {
		return nil, false, negativeTTL(in), &DNSError{Name: domain, Type: "MX", Kind: DNSNotFound}
	}
	secure := r.c.TrustAD() && in.AuthenticatedData
	var out []MX
	ttl := time.Duration(-1)
	for _, rr := range in.Answer {
		if mx, ok := rr.(*dns.MX); ok {
			out = append(out, MX{Host: strings.ToLower(strings.TrimSuffix(mx.Mx, ".")), Pref: mx.Preference,
				Secure: secure})
			ttl = minTTL(ttl, rr.Header().Ttl)
		}
	}
	if ttl < 0 {
		ttl = negativeTTL(in)
	}
	return out, secure, ttl, nil
}

func (r *dnsResolver) LookupIP(ctx context.Context, host string) (HostAddrs, error) {
	out := HostAddrs{Secure: r.c.TrustAD()}
	ttl := time.Duration(-1)
	for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
		in, err := r.query(ctx, host, qt)
		typ := dns.TypeToString[qt]
		switch {
		case err != nil && qt == dns.TypeAAAA && len(out.IPs) > 0:
			continue // broken AAAA answers must not hide working A records
		case err != nil:
			return out, &DNSError{Name: host, Type: typ, Kind: DNSTemporary, Err: err}
		case in.Rcode == dns.RcodeNameError:
			return out, &DNSError{Name: host, Type: typ, Kind: DNSNotFound}
		}
		out.Secure = out.Secure && in.AuthenticatedData
		for _, rr := range in.Answer {
			switch v := rr.(type) {
			case *dns.A:
				out.IPs = append(out.IPs, v.A)
			case *dns.AAAA:
				out.IPs = append(out.IPs, v.AAAA)
			case *dns.CNAME:
				out.CNAME = strings.ToLower(strings.TrimSuffix(v.Target, "."))
			}
			ttl = minTTL(ttl, rr.Header().Ttl)
		}
	}
	out.TTL = ttl
	if ttl < 0 {
		out.TTL = time.Minute
	}
	return out, nil
}

func minTTL(cur time.Duration, ttl uint32) time.Duration {
	d := time.Duration(ttl) * time.Second
	if cur < 0 || d < cur {
		return d
	}
	return cur
}

// negativeTTL is the SOA minimum of a negative answer (RFC 2308 §5), or 60s.
func negativeTTL(in *dns.Msg) time.Duration {
	for _, rr := range in.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			return time.Duration(min(soa.Minttl, soa.Hdr.Ttl)) * time.Second
		}
	}
	return time.Minute
}
