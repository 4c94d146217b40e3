package relaytest

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/relay/certgen"
)

// certValidity is how long test certificates are valid.
const certValidity = 24 * time.Hour

// CA is a throwaway certificate authority for `verify` tests (a
// certgen.CA with testing.TB helpers).
type CA struct {
	ca *certgen.CA
	// File is the CA certificate as a PEM file (for delivery.tls.ca_file).
	File string
	// Pool trusts only this CA.
	Pool *x509.CertPool
}

// NewCA creates a CA and writes its certificate to a temp PEM file.
func NewCA(t testing.TB) *CA {
	t.Helper()
	ca, err := certgen.NewCA("jetrelay test CA", certValidity)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(file, ca.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	return &CA{ca: ca, File: file, Pool: ca.Pool()}
}

// Cert issues a server certificate for hosts (names or IPs), signed by the CA.
func (ca *CA) Cert(t testing.TB, hosts ...string) tls.Certificate {
	t.Helper()
	c, err := ca.ca.Issue(hosts, certValidity)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// SelfSigned returns a self-signed server certificate for hosts.
func SelfSigned(t testing.TB, hosts ...string) tls.Certificate {
	t.Helper()
	c, err := certgen.SelfSigned(hosts, certValidity)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
