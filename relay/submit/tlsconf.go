package submit

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/jetrelay/jetrelay/relay/certgen"
)

// Generated certificate files under data_dir.
const (
	tlsDir       = "tls"
	certFileName = "cert.pem"
	keyFileName  = "key.pem"
	certLifetime = 10 * 365 * 24 * time.Hour
	// certRenewBefore regenerates a generated certificate this close to expiry.
	certRenewBefore = 30 * 24 * time.Hour
)

// LoadOrCreateTLS returns the submission TLS configuration: the
// submission.tls cert and key, or else a self-signed ECDSA P-256
// certificate for s.Hostname, localhost, 127.0.0.1 and ::1, generated once
// under s.DataDir/tls (key mode 0600) and reused. A generated certificate is
// replaced when it no longer names s.Hostname or is about to expire.
// TLS 1.2 is the minimum (RFC 8996, RFC 9325 §3.1.1).
func LoadOrCreateTLS(s Settings) (*tls.Config, error) {
	certFile, keyFile := s.Submission.TLS.Cert, s.Submission.TLS.Key
	if certFile == "" {
		dir := filepath.Join(s.DataDir, tlsDir)
		certFile, keyFile = filepath.Join(dir, certFileName), filepath.Join(dir, keyFileName)
		if err := ensureSelfSigned(dir, certFile, keyFile, s.Hostname); err != nil {
			return nil, fmt.Errorf("submission TLS certificate under %s: %w", dir, err)
		}
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("submission.tls: load %s and %s: %w", certFile, keyFile, err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

func ensureSelfSigned(dir, certFile, keyFile, host string) error {
	if ok, err := usableCert(certFile, keyFile, host); err != nil {
		return err
	} else if ok {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	certPEM, keyPEM, err := selfSigned(host)
	if err != nil {
		return err
	}
	// Key first, both via rename, so a crash never leaves a cert without its key.
	if err := writeFileAtomic(keyFile, keyPEM, 0o600); err != nil {
		return err
	}
	return writeFileAtomic(certFile, certPEM, 0o644)
}

// usableCert reports whether a previously generated pair exists, matches,
// names host and is not about to expire.
func usableCert(certFile, keyFile, host string) (bool, error) {
	_, errC := os.Stat(certFile)
	_, errK := os.Stat(keyFile)
	if errors.Is(errC, os.ErrNotExist) || errors.Is(errK, os.ErrNotExist) {
		return false, nil
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return false, nil // unreadable or mismatched: generate a new pair
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return false, nil
	}
	if time.Until(leaf.NotAfter) < certRenewBefore {
		return false, nil
	}
	return leaf.VerifyHostname(host) == nil, nil
}

// selfSigned makes the generated submission certificate: hostname (unless
// it is an IP literal already listed), localhost, 127.0.0.1, ::1 and a
// hostname that is an IP literal.
func selfSigned(host string) (certPEM, keyPEM []byte, err error) {
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	if host != "" && !slices.Contains(hosts, host) {
		hosts = append([]string{host}, hosts...)
	}
	cert, err := certgen.SelfSigned(hosts, certLifetime)
	if err != nil {
		return nil, nil, err
	}
	return certgen.PEM(cert)
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// initTLS sets up the configuration the listeners use: it hands out the
// current one (tlsCur) per handshake, so Prepare can replace the
// certificate without touching a listener. given nil: loaded from s.
func (s *Server) initTLS(given *tls.Config, set Settings) error {
	cur := given
	if cur == nil {
		var err error
		if cur, err = LoadOrCreateTLS(set); err != nil {
			return err
		}
		s.tlsOwned = true
	}
	s.tlsCur.Store(cur)
	s.tlsConf = &tls.Config{MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return s.tlsCur.Load(), nil }}
	return nil
}
