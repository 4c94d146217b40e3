package certgen

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"testing"
	"time"
)

// TestSelfSigned: a P-256 server certificate naming every host, valid from
// an hour ago for the validity asked, that round-trips through PEM.
func TestSelfSigned(t *testing.T) {
	t.Parallel()
	hosts := []string{"relay.test", "localhost", "127.0.0.1", "::1"}
	cert, err := SelfSigned(hosts, 10*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf := cert.Leaf
	for _, h := range hosts {
		if err := leaf.VerifyHostname(h); err != nil {
			t.Errorf("does not cover %s: %v", h, err)
		}
	}
	if err := leaf.VerifyHostname("other.test"); err == nil {
		t.Error("covers a host it was not asked for")
	}
	if leaf.Subject.CommonName != "relay.test" || leaf.IsCA {
		t.Errorf("subject %q, CA %v", leaf.Subject.CommonName, leaf.IsCA)
	}
	if k, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
		t.Errorf("key %T, want ECDSA P-256", leaf.PublicKey)
	}
	if d := time.Until(leaf.NotAfter); d < 9*24*time.Hour || d > 10*24*time.Hour {
		t.Errorf("expires in %v, want 10 days", d)
	}
	if time.Until(leaf.NotBefore) > -30*time.Minute {
		t.Errorf("NotBefore %v is not backdated", leaf.NotBefore)
	}
	if len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth {
		t.Errorf("ext key usage %v", leaf.ExtKeyUsage)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "localhost"}); err != nil {
		t.Errorf("does not verify against itself: %v", err)
	}
	certPEM, keyPEM, err := PEM(cert)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		t.Errorf("PEM pair does not load: %v", err)
	}
	other, _ := SelfSigned(hosts, time.Hour)
	if other.Leaf.SerialNumber.Cmp(leaf.SerialNumber) == 0 {
		t.Error("two certificates share a serial number")
	}
}

// TestIPOnly: an IP-only certificate is named after the IP.
func TestIPOnly(t *testing.T) {
	t.Parallel()
	cert, err := SelfSigned([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if cert.Leaf.Subject.CommonName != "127.0.0.1" || len(cert.Leaf.DNSNames) != 0 || len(cert.Leaf.IPAddresses) != 1 {
		l := cert.Leaf
		t.Errorf("subject %q, names %v, ips %v", l.Subject.CommonName, l.DNSNames, l.IPAddresses)
	}
	if _, err := SelfSigned(nil, time.Hour); err == nil {
		t.Error("a certificate without hosts was made")
	}
}

// TestCA: issued certificates verify against the CA's pool and PEM, a
// self-signed one does not.
func TestCA(t *testing.T) {
	t.Parallel()
	ca, err := NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !ca.Cert.IsCA || ca.Cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Fatal("CA certificate cannot sign")
	}
	leaf, err := ca.Issue([]string{"mx.example.test"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ca.CertPEM()) {
		t.Fatal("CA PEM does not parse")
	}
	for _, p := range []*x509.CertPool{ca.Pool(), roots} {
		if _, err := leaf.Leaf.Verify(x509.VerifyOptions{Roots: p, DNSName: "mx.example.test"}); err != nil {
			t.Errorf("issued certificate does not verify: %v", err)
		}
	}
	self, _ := SelfSigned([]string{"mx.example.test"}, time.Hour)
	if _, err := self.Leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: "mx.example.test"}); err == nil {
		t.Error("a self-signed certificate verifies against the CA")
	}
}
