package relaytest

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// SetSecure marks name and every name below it as DNSSEC-secure (on) or
// insecure (off): their NOERROR and NXDOMAIN answers carry the AD bit when
// the query set AD or DO (RFC 6840 §5.7, RFC 4035 §3.2.3), as a validating
// resolver's would. The nearest marked ancestor decides; unmarked names are
// insecure. SERVFAIL never carries AD.
func (z *Zone) SetSecure(name string, on bool) { z.set(z.secure, name, on) }

// AddTLSA adds a TLSA record (RFC 6698) at name, such as "_25._tcp.mx.example".
func (z *Zone) AddTLSA(name string, usage, selector, matching uint8, data []byte) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.TLSA[key(name)] = append(z.TLSA[key(name)], &dns.TLSA{Usage: usage, Selector: selector,
		MatchingType: matching, Certificate: hex.EncodeToString(data)})
}

// setAD sets m's AD bit for name's answer per SetSecure; z.mu is held.
func (z *Zone) setAD(qname string, m *dns.Msg) {
	if m.Rcode != dns.RcodeSuccess && m.Rcode != dns.RcodeNameError {
		return
	}
	for n := key(qname); ; {
		if on, ok := z.secure[n]; ok {
			m.AuthenticatedData = on
			break
		}
		_, parent, found := strings.Cut(n, ".")
		if !found {
			break
		}
		n = parent
	}
}

// askedAD: the query asks for the AD bit (AD or the EDNS0 DO bit).
func askedAD(r *dns.Msg) bool {
	opt := r.IsEdns0()
	return r.AuthenticatedData || opt != nil && opt.Do()
}

// SPKISHA256 is the data of a "3 1 1" (or "2 1 1") TLSA record for cert:
// the SHA-256 of its SubjectPublicKeyInfo.
func SPKISHA256(cert *x509.Certificate) []byte {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return sum[:]
}

// CertSHA256 is the data of a "2 0 1" (or "3 0 1") TLSA record for cert:
// the SHA-256 of the whole certificate.
func CertSHA256(cert *x509.Certificate) []byte {
	sum := sha256.Sum256(cert.Raw)
	return sum[:]
}

// Certificate is the CA's own certificate (a DANE-TA trust anchor).
func (ca *CA) Certificate() *x509.Certificate { return ca.ca.Cert }

// ChainCert issues a certificate for hosts and presents the CA certificate
// after it, as a server whose TLSA record names its CA (DANE-TA) must.
func (ca *CA) ChainCert(t testing.TB, hosts ...string) tls.Certificate {
	t.Helper()
	c := ca.Cert(t, hosts...)
	c.Certificate = append(c.Certificate, ca.ca.Cert.Raw)
	return c
}

// ExpiredCert issues a certificate for hosts, with the CA after it, that
// expired an hour ago.
func (ca *CA) ExpiredCert(t testing.TB, hosts ...string) tls.Certificate {
	t.Helper()
	c, err := ca.ca.Issue(hosts, -time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c.Certificate = append(c.Certificate, ca.ca.Cert.Raw)
	return c
}
