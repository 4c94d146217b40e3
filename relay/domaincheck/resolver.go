package domaincheck

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"

	"github.com/miekg/dns"
)

// Resolver is the DNS a check needs. Its method set is the one the SPF
// library asks for (and *net.Resolver has), so one value serves both.
// Every method reports a name that does not exist, or has no record of the
// asked type, as a *net.DNSError with IsNotFound set, and a lookup that
// could not be answered (SERVFAIL, timeout, budget spent) as a
// *net.DNSError with IsTemporary set.
type Resolver interface {
	// LookupTXT returns one string per TXT record at name, its
	// character-strings concatenated (RFC 7208 §3.3, RFC 6376 §3.6.2.2).
	LookupTXT(ctx context.Context, name string) ([]string, error)
	// LookupMX returns the MX records of name; a null MX (RFC 7505) is
	// one record whose Host is ".".
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	// LookupIPAddr returns the A and AAAA addresses of host.
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
	// LookupAddr returns the PTR names of the address addr (fully
	// qualified, with the final dot).
	LookupAddr(ctx context.Context, addr string) ([]string, error)
}

// Querier asks one DNS question; *dnsclient.Client is one. It returns the
// answer for NOERROR and NXDOMAIN (the caller reads Rcode) and an error
// for anything else.
type Querier interface {
	Query(ctx context.Context, name string, qtype uint16) (*dns.Msg, error)
}

// Bounds on what the DNS may hand a check.
const (
	// DefaultMaxQueries caps the queries of one Check: SPF alone may make
	// 10 DNS-mechanism lookups, each mx one up to 10 address lookups
	// (RFC 7208 §4.6.4), and every IP is evaluated on its own.
	DefaultMaxQueries = 400
	// MaxRecords caps the records taken from one answer.
	MaxRecords = 32
	// MaxTXTBytes caps one TXT record (all its strings); a 4096-bit DKIM
	// key record is about 750 octets.
	MaxTXTBytes = 4096
)

// dnsResolver is a Resolver over a Querier with a query budget.
type dnsResolver struct {
	q    Querier
	left atomic.Int64
}

// NewResolver returns a Resolver that sends every question through q and
// refuses more than maxQueries questions in all (DefaultMaxQueries when
// maxQueries <= 0). Answers are cut to MaxRecords records of the asked
// type; a TXT record longer than MaxTXTBytes is an error.
func NewResolver(q Querier, maxQueries int) Resolver {
	if maxQueries <= 0 {
		maxQueries = DefaultMaxQueries
	}
	r := &dnsResolver{q: q}
	r.left.Store(int64(maxQueries))
	return r
}

// errBudget is the error of a query past the budget.
var errBudget = errors.New("DNS query budget of this check spent")

// query asks name/qtype and returns the records of that type; a name that
// does not exist or has none is a not-found DNSError.
func (r *dnsResolver) query(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
	if r.left.Add(-1) < 0 {
		return nil, &net.DNSError{Err: errBudget.Error(), Name: name, IsTemporary: true}
	}
	m, err := r.q.Query(ctx, name, qtype)
	if err != nil {
		return nil, &net.DNSError{Err: err.Error(), Name: name, IsTemporary: true}
	}
	var out []dns.RR
	for _, rr := range m.Answer {
		if rr.Header().Rrtype == qtype && len(out) < MaxRecords {
			out = append(out, rr)
		}
	}
	if m.Rcode == dns.RcodeNameError || len(out) == 0 {
		what := "no " + dns.TypeToString[qtype] + " record"
		if m.Rcode == dns.RcodeNameError {
			what = "no such domain"
		}
		return nil, &net.DNSError{Err: what, Name: name, IsNotFound: true}
	}
	return out, nil
}

func (r *dnsResolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	rrs, err := r.query(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		s := strings.Join(rr.(*dns.TXT).Txt, "")
		if len(s) > MaxTXTBytes {
			return nil, &net.DNSError{Err: fmt.Sprintf("TXT record of %d octets (at most %d)", len(s), MaxTXTBytes),
				Name: name}
		}
		out = append(out, s)
	}
	return out, nil
}

func (r *dnsResolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	rrs, err := r.query(ctx, name, dns.TypeMX)
	if err != nil {
		return nil, err
	}
	out := make([]*net.MX, 0, len(rrs))
	for _, rr := range rrs {
		mx := rr.(*dns.MX)
		out = append(out, &net.MX{Host: mx.Mx, Pref: mx.Preference})
	}
	return out, nil
}

// LookupIPAddr asks for A and AAAA; it fails only when both do, and then
// as not-found only when both were not found.
func (r *dnsResolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	var out []net.IPAddr
	var errs [2]error
	for i, t := range []uint16{dns.TypeA, dns.TypeAAAA} {
		rrs, err := r.query(ctx, host, t)
		errs[i] = err
		for _, rr := range rrs {
			switch a := rr.(type) {
			case *dns.A:
				out = append(out, net.IPAddr{IP: a.A})
			case *dns.AAAA:
				out = append(out, net.IPAddr{IP: a.AAAA})
			}
		}
	}
	if len(out) > 0 {
		return out, nil
	}
	if notFound(errs[0]) && notFound(errs[1]) {
		return nil, &net.DNSError{Err: "no address record", Name: host, IsNotFound: true}
	}
	if !notFound(errs[0]) {
		return nil, errs[0]
	}
	return nil, errs[1]
}

func (r *dnsResolver) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	name, err := dns.ReverseAddr(addr)
	if err != nil {
		return nil, &net.DNSError{Err: err.Error(), Name: addr}
	}
	rrs, err := r.query(ctx, name, dns.TypePTR)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		out = append(out, rr.(*dns.PTR).Ptr)
	}
	return out, nil
}

// notFound reports whether err says the name or record does not exist.
func notFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}
