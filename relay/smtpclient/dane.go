package smtpclient

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// TLSA usages, selectors and matching types (RFC 6698 §2.1, RFC 7218).
const (
	UsagePKIXTA = 0 // unusable for SMTP (RFC 7672 §3.1.3)
	UsagePKIXEE = 1 // unusable for SMTP (RFC 7672 §3.1.3)
	UsageDANETA = 2
	UsageDANEEE = 3

	SelectorCert = 0 // the whole certificate (DER)
	SelectorSPKI = 1 // its SubjectPublicKeyInfo

	MatchFull   = 0
	MatchSHA256 = 1
	MatchSHA512 = 2
)

// PolicyDANE is ConnInfo.TLSPolicy of a connection to an MX host with
// usable TLSA records (RFC 7672).
const PolicyDANE = "dane"

// TLSA is one TLSA record (RFC 6698 §2.1).
type TLSA struct {
	Usage, Selector, MatchingType uint8
	Data                          []byte
}

// Usable reports whether r can authenticate an SMTP server: DANE-TA or
// DANE-EE, a known selector and matching type, and a digest of the right
// length (RFC 7672 §3.1.3, RFC 7671 §4).
func (r TLSA) Usable() bool {
	if r.Usage != UsageDANETA && r.Usage != UsageDANEEE || r.Selector > SelectorSPKI {
		return false
	}
	switch r.MatchingType {
	case MatchFull:
		return len(r.Data) > 0
	case MatchSHA256:
		return len(r.Data) == sha256.Size
	case MatchSHA512:
		return len(r.Data) == sha512.Size
	}
	return false
}

// Matches reports whether cert is the one r names.
func (r TLSA) Matches(cert *x509.Certificate) bool {
	data := cert.Raw
	if r.Selector == SelectorSPKI {
		data = cert.RawSubjectPublicKeyInfo
	}
	switch r.MatchingType {
	case MatchSHA256:
		sum := sha256.Sum256(data)
		data = sum[:]
	case MatchSHA512:
		sum := sha512.Sum512(data)
		data = sum[:]
	}
	return bytes.Equal(data, r.Data)
}

// TLSAResolver is a Resolver that also looks up TLSA records. DANE is
// used only when Options.Resolver implements it.
type TLSAResolver interface {
	// LookupTLSA returns the TLSA records at name (such as
	// "_25._tcp.mx.example") and whether the answer was DNSSEC-secure (AD
	// bit of a trusted resolver). A name without records returns none and
	// a nil error; a failed lookup (SERVFAIL, timeout) is a *DNSError.
	LookupTLSA(ctx context.Context, name string) (recs []TLSA, secure bool, ttl time.Duration, err error)
}

func (r *dnsResolver) LookupTLSA(ctx context.Context, name string) ([]TLSA, bool, time.Duration, error) {
	in, err := r.query(ctx, name, dns.TypeTLSA)
	if err != nil {
		return nil, false, 0, &DNSError{Name: name, Type: "TLSA", Kind: DNSTemporary, Err: err}
	}
	secure := r.c.TrustAD() && in.AuthenticatedData
	var out []TLSA
	ttl := time.Duration(-1)
	for _, rr := range in.Answer {
		if t, ok := rr.(*dns.TLSA); ok {
			data, err := hex.DecodeString(t.Certificate)
			if err != nil {
				continue // malformed: unusable
			}
			out = append(out, TLSA{Usage: t.Usage, Selector: t.Selector, MatchingType: t.MatchingType, Data: data})
			ttl = minTTL(ttl, rr.Header().Ttl)
		}
	}
	if ttl < 0 {
		ttl = negativeTTL(in)
	}
	return out, secure, ttl, nil
}

func (c *cachingResolver) LookupTLSA(ctx context.Context, name string) ([]TLSA, bool, time.Duration, error) {
	tr, ok := c.r.(TLSAResolver)
	if !ok {
		return nil, false, 0, nil
	}
	e, err := c.get(ctx, "tlsa:"+name, func(ctx context.Context, ce *cacheEntry) (time.Duration, error) {
		recs, secure, ttl, err := tr.LookupTLSA(ctx, name)
		ce.tlsa, ce.secure = recs, secure
		return ttl, err
	})
	if err != nil {
		return nil, false, 0, err
	}
	return e.tlsa, e.secure, time.Until(e.exp), e.err
}

// TLSFailure is a failed TLS policy check; Result is its RFC 8460 §4.3
// result type (ConnInfo.TLSFailure).
type TLSFailure struct {
	Result string // "validation-failure", "dnssec-invalid", ...
	Reason string
}

func (f *TLSFailure) Error() string { return f.Reason }

// FailDNSSECInvalid is the TLS-RPT result type (RFC 8460 §4.3.2.1) of a
// failed TLSA lookup for a DNSSEC-secure MX host; DANE's other failures use
// the result types of sts.go.
const FailDNSSECInvalid = "dnssec-invalid"

// TLSAAnswer is one TLSA lookup made for a host (Inspect shows them).
type TLSAAnswer struct {
	Name    string
	Records []TLSA
	Secure  bool
	Err     error
}

// String is the record in zone-file order: "3 1 1 <hex>".
func (r TLSA) String() string {
	return fmt.Sprintf("%d %d %d %s", r.Usage, r.Selector, r.MatchingType, hex.EncodeToString(r.Data))
}

// lookupDANE gives g.host its usable TLSA records when DANE applies: DANE
// is on, the MX answer and the host's addresses are DNSSEC-secure (RFC
// 7672 §2.2.1, §2.2.2) and a secure TLSA answer at _<port>._tcp.<base>
// holds usable records, base being the CNAME-expanded host name first,
// then the MX host name (§2.2.2). A failed TLSA lookup for such a host
// makes it unusable (an error; RFC 7672 §2.2); anything else leaves the
// host as it was. Every lookup is noted in g.tlsa.
func (t *mxTransport) lookupDANE(ctx context.Context, g *gathered) error {
	tr, ok := t.res.(TLSAResolver)
	mx, a, h := g.mx, g.addrs, &g.host
	if !t.dane || !ok || !mx.Secure || !a.Secure {
		return nil
	}
	bases := []string{mx.Host}
	if a.CNAME != "" && a.CNAME != mx.Host {
		bases = []string{a.CNAME, mx.Host}
	}
	for _, base := range bases {
		name := fmt.Sprintf("_%d._tcp.%s", t.port, base)
		recs, secure, _, err := tr.LookupTLSA(ctx, name)
		g.tlsa = append(g.tlsa, TLSAAnswer{Name: name, Records: recs, Secure: secure, Err: err})
		if err != nil {
			f := &TLSFailure{Result: FailDNSSECInvalid, Reason: "DANE: TLSA lookup for secure MX host " + base +
				" failed: " + err.Error()}
			return newError(withCause(replyTLSFailed, f.Reason), true, f)
		}
		for _, r := range recs {
			if secure && r.Usable() {
				h.DANE = append(h.DANE, r)
			}
		}
		if len(h.DANE) > 0 {
			if base != mx.Host {
				h.TLSABase = base
			}
			return nil
		}
	}
	return nil
}

// daneNames are the names a DANE-TA certificate may be issued to: the TLSA
// base domain, which is also the SNI name, then the MX host name (RFC 7672
// §3.2.2, §8.1).
func daneNames(h Host) []string {
	if h.TLSABase != "" {
		return []string{h.TLSABase, h.Name}
	}
	return []string{h.Name}
}

// danePlan is the plan for a host with usable TLSA records: STARTTLS is
// mandatory and the certificate is checked against the records, not the
// WebPKI (RFC 7672 §2.2, §3).
func danePlan(p Plan) Plan {
	p.TLS, p.RequireTLS, p.Verify, p.PlainFallback = "starttls", true, false, false
	return p
}

// daneConfig is the TLS config for a DANE host: the handshake fails unless
// verifyDANE accepts the chain; *fail gets the reason, *verified the success.
func daneConfig(recs []TLSA, names []string, verified *bool, fail **TLSFailure) *tls.Config {
	return &tls.Config{ServerName: names[0], MinVersion: tls.VersionTLS12, InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if f := verifyDANE(cs.PeerCertificates, recs, names, time.Now()); f != nil {
				*fail = f
				return f
			}
			*verified = true
			return nil
		}}
}

// verifyDANE checks a server's chain against usable TLSA records. DANE-EE
// matches the leaf alone, names and dates ignored (RFC 7672 §3.1.1);
// DANE-TA needs a matching certificate in the presented chain that the leaf
// chains to, and the leaf must be valid now for one of names, the TLSA
// base domain or the MX host (RFC 7672 §3.1.2, §3.2.2).
func verifyDANE(chain []*x509.Certificate, recs []TLSA, names []string, now time.Time) *TLSFailure {
	if len(chain) == 0 {
		return &TLSFailure{Result: FailValidation, Reason: "DANE: no certificate presented"}
	}
	for _, r := range recs {
		if r.Usage == UsageDANEEE && r.Matches(chain[0]) {
			return nil
		}
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	var taErr error
	for _, r := range recs {
		for _, ta := range chain[1:] {
			if r.Usage != UsageDANETA || !r.Matches(ta) {
				continue
			}
			roots := x509.NewCertPool()
			roots.AddCert(ta)
			_, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter,
				CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
			if err == nil {
				err = verifyAnyName(chain[0], names)
			}
			if err == nil {
				return nil
			}
			taErr = err
		}
	}
	if taErr != nil {
		return chainFailure(taErr)
	}
	return &TLSFailure{Result: FailValidation,
		Reason: "DANE: no TLSA record of " + names[0] + " matches the server's certificate chain"}
}

// verifyAnyName accepts cert when it is valid for one of names; else the
// first name's error.
func verifyAnyName(cert *x509.Certificate, names []string) error {
	var first error
	for _, n := range names {
		err := cert.VerifyHostname(n)
		if err == nil {
			return nil
		}
		if first == nil {
			first = err
		}
	}
	return first
}

// chainFailure names why a chain to a matching DANE-TA failed.
func chainFailure(err error) *TLSFailure {
	return &TLSFailure{Result: failureOfError(err), Reason: "DANE-TA: " + strings.TrimPrefix(err.Error(), "x509: ")}
}
