package sink

import (
	"crypto/tls"
	"fmt"
	"time"

	"github.com/jetrelay/jetrelay/relay/certgen"
)

// certLifetime is how long a generated certificate is valid.
const certLifetime = 30 * 24 * time.Hour

// SelfSignedTLS returns a server configuration with a fresh ECDSA P-256
// certificate for DefaultDomain, localhost, 127.0.0.1 and ::1 (clients must
// skip verification or trust it explicitly).
func SelfSignedTLS() (*tls.Config, error) {
	cert, err := certgen.SelfSigned([]string{DefaultDomain, "localhost", "127.0.0.1", "::1"}, certLifetime)
	if err != nil {
		return nil, fmt.Errorf("sink: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// LoadTLS returns a server configuration with the PEM certificate and key.
func LoadTLS(certFile, keyFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("sink: load certificate: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}
