package queue

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// routeCA issues route certificates usable for both ends of a route
// (server and client authentication), as mutual TLS needs.
type routeCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string
}

func newRouteCA(t *testing.T, name string) *routeCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &routeCA{cert: cert, key: key, file: filepath.Join(t.TempDir(), "ca.pem")}
	writeRoutePEM(t, ca.file, "CERTIFICATE", der)
	return ca
}

// issue writes a certificate for 127.0.0.1 and its key; returns the paths.
func (ca *routeCA) issue(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "node"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "node.pem"), filepath.Join(dir, "node.key")
	writeRoutePEM(t, certFile, "CERTIFICATE", der)
	writeRoutePEM(t, keyFile, "EC PRIVATE KEY", kder)
	return certFile, keyFile
}

func writeRoutePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestRouteMutualTLS: nodes whose certificates the shared CA signed form
// routes over TLS; a node with a certificate from another CA is refused.
func TestRouteMutualTLS(t *testing.T) {
	ca, other := newRouteCA(t, "cluster CA"), newRouteCA(t, "other CA")
	ports := clusterPorts(t, 3)
	log := &clusterLog{}
	node := func(i int, signer *routeCA) Options {
		o := clusterNode(t, i, ports, "route-secret", log)
		o.Cluster.TLSCert, o.Cluster.TLSKey = signer.issue(t)
		o.Cluster.TLSCAFile = ca.file
		return o
	}
	a, _, err := startEmbedded(node(0, ca))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { a.Shutdown(); a.WaitForShutdown() }()
	b, _, err := startEmbedded(node(1, ca))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { b.Shutdown(); b.WaitForShutdown() }()
	clusterWait(t, time.Minute, "a TLS route between the nodes", func() bool {
		return a.NumRoutes() > 0 && b.NumRoutes() > 0
	})
	c, _, err := startEmbedded(node(2, other))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { c.Shutdown(); c.WaitForShutdown() }()
	clusterWait(t, time.Minute, "the stranger's TLS handshake to fail", func() bool {
		return log.has("TLS route handshake error")
	})
	if c.NumRoutes() != 0 {
		t.Fatalf("a node with a certificate from another CA has %d routes", c.NumRoutes())
	}
}
