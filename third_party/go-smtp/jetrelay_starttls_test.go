package smtp

// Tests for Client.StartTLS (see PATCHES.md).

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"testing"
	"time"
)

// tlsServer serves the fork's Server with STARTTLS on loopback and reports
// the EHLO name and TLS state of each command.
func tlsServer(t *testing.T) (*Client, chan string) {
	t.Helper()
	cert, err := tls.X509KeyPair(localhostCert, localhostKey)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	seen := make(chan string, 16)
	s := NewServer(hookBackend{})
	s.Domain = "localhost"
	s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	s.CommandHook = func(c *Conn, cmd string) error {
		_, ok := c.TLSConnectionState()
		if ok {
			cmd += " tls"
		}
		seen <- cmd
		return nil
	}
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := NewClient(conn)
	c.CommandTimeout = 30 * time.Second
	t.Cleanup(func() { c.Close() })
	return c, seen
}

func TestClientStartTLS(t *testing.T) {
	c, seen := tlsServer(t)
	if err := c.Hello("client.example"); err != nil {
		t.Fatal(err)
	}
	if err := c.StartTLS(&tls.Config{ServerName: "example.com"}); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.TLSConnectionState(); !ok {
		t.Fatal("no TLS after StartTLS")
	}
	if err := c.Noop(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"EHLO", "STARTTLS", "EHLO tls", "NOOP tls"} {
		if got := <-seen; got != want {
			t.Fatalf("server saw %q, want %q", got, want)
		}
	}
}

func TestClientStartTLSHandshakeFailure(t *testing.T) {
	c, _ := tlsServer(t)
	if err := c.Hello("client.example"); err != nil {
		t.Fatal(err)
	}
	err := c.StartTLS(&tls.Config{ServerName: "wrong.example"}) // the certificate is for example.com
	var he x509.HostnameError
	if !errors.As(err, &he) {
		t.Fatalf("StartTLS = %v, want a certificate name error", err)
	}
	if err2 := c.Noop(); err2 != err {
		t.Fatalf("Noop after a failed handshake = %v, want the handshake error", err2)
	}
}
