// Package certgen makes X.509 certificates for jetrelay's own use: the
// self-signed submission certificate generated under data_dir/tls when no
// certificate is configured, the development sink's certificate, and the
// throwaway certificate authority of the tests (relay/relaytest).
//
// Every key is ECDSA P-256, every serial a random 127-bit number (RFC 5280
// §4.1.2.2: positive, at most 20 octets, unpredictable), every leaf a TLS
// server certificate (RFC 5280 §4.2.1.12 id-kp-serverAuth) valid from one
// hour in the past, so a peer whose clock runs slightly behind accepts it.
// It writes no files: PEM encodes a pair for whoever stores it.
package certgen

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"
)

// backdate is how far NotBefore lies in the past (clock skew of peers).
const backdate = time.Hour

// serialBits bounds a serial number (RFC 5280 §4.1.2.2: at most 20 octets).
const serialBits = 127

// Organization names jetrelay as the subject's organisation, so a
// generated certificate is recognisable in a peer's logs.
const Organization = "jetrelay self-signed"

// SelfSigned returns a new self-signed server certificate for hosts (DNS
// names or IP literals; the first DNS name, else the first host, is the
// subject's common name) valid for validity from now. Leaf is set.
func SelfSigned(hosts []string, validity time.Duration) (tls.Certificate, error) {
	return issue(hosts, validity, nil)
}

// CA is a certificate authority that issues server certificates. It lives
// in memory only and is meant for tests and development.
type CA struct {
	// Cert is the CA's own certificate.
	Cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// NewCA returns a new certificate authority called name, valid for
// validity from now.
func NewCA(name string, validity time.Duration) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certgen: CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{Organization}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(validity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		// RFC 5280 §4.2.1.3: a CA certificate signs certificates.
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("certgen: CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("certgen: CA certificate: %w", err)
	}
	return &CA{Cert: cert, key: key}, nil
}

// Issue returns a new server certificate for hosts (as SelfSigned) signed
// by the CA, valid for validity from now. Leaf is set.
func (ca *CA) Issue(hosts []string, validity time.Duration) (tls.Certificate, error) {
	return issue(hosts, validity, ca)
}

// CertPEM returns the CA certificate PEM-encoded, for a trust file.
func (ca *CA) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})
}

// Pool returns a pool that trusts only this CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// issue makes a leaf for hosts signed by ca, self-signed when ca is nil.
func issue(hosts []string, validity time.Duration, ca *CA) (tls.Certificate, error) {
	if len(hosts) == 0 {
		return tls.Certificate{}, errors.New("certgen: a certificate needs at least one host")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("certgen: key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	addHosts(tmpl, hosts)
	parent, parentKey := tmpl, key
	if ca != nil {
		parent, parentKey = ca.Cert, ca.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("certgen: certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("certgen: certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// addHosts puts hosts into the subject alternative names (RFC 5280
// §4.2.1.6; TLS clients match only those, RFC 6125 §6.4.4) and names the
// subject after the first DNS name, else the first host.
func addHosts(tmpl *x509.Certificate, hosts []string) {
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	cn := hosts[0]
	if len(tmpl.DNSNames) > 0 {
		cn = tmpl.DNSNames[0]
	}
	tmpl.Subject = pkix.Name{CommonName: cn, Organization: []string{Organization}}
}

func newSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), serialBits))
	if err != nil {
		return nil, fmt.Errorf("certgen: serial: %w", err)
	}
	return n, nil
}

// PEM encodes cert's first certificate and its private key (PKCS #8,
// RFC 5208) as PEM, the form tls.LoadX509KeyPair reads.
func PEM(cert tls.Certificate) (certPEM, keyPEM []byte, err error) {
	if len(cert.Certificate) == 0 {
		return nil, nil, errors.New("certgen: no certificate to encode")
	}
	kder, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return nil, nil, fmt.Errorf("certgen: key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), nil
}
