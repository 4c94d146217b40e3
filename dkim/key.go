package dkim

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

// Algorithm is a DKIM key type, spelled as in the k= tag of the key record.
type Algorithm string

// The key types jetrelay signs with: RSA (RFC 6376 §3.3) and Ed25519 (RFC 8463).
const (
	RSA     Algorithm = "rsa"
	Ed25519 Algorithm = "ed25519"
)

// RSA key sizes, RFC 8301 §3.1–3.2: signers MUST use at least 1024 bits and
// SHOULD use 2048; verifiers only promise to handle up to 4096.
const (
	MinRSABits         = 1024
	RecommendedRSABits = 2048
	MaxRSABits         = 4096
)

// PEM block types accepted by ParseKey.
const (
	pemPKCS8 = "PRIVATE KEY"     // RFC 5208 / RFC 8410 (RSA or Ed25519)
	pemPKCS1 = "RSA PRIVATE KEY" // RFC 8017 appendix A.1.2
)

// ErrWeakKey is wrapped by ParseKey's error for RSA keys below MinRSABits.
var ErrWeakKey = errors.New("RSA key is shorter than 1024 bits (RFC 8301 §3.2: receivers ignore such signatures)")

// ParseKey decodes a PEM private key: PKCS#8 "PRIVATE KEY" (RSA or
// Ed25519) or PKCS#1 "RSA PRIVATE KEY". Other PEM blocks before the key
// (such as "EC PARAMETERS" or a certificate) are skipped. RSA keys shorter
// than MinRSABits are refused with an error wrapping ErrWeakKey.
func ParseKey(data []byte) (crypto.Signer, error) {
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("no PEM private key found (want PRIVATE KEY or RSA PRIVATE KEY)")
		}
		if _, encrypted := block.Headers["Proc-Type"]; encrypted {
			return nil, errors.New("encrypted PEM keys are not supported: store the key unencrypted with mode 0600")
		}
		switch block.Type {
		case pemPKCS8:
			k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("bad PKCS#8 key: %w", err)
			}
			return checkKey(k)
		case pemPKCS1:
			k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("bad PKCS#1 RSA key: %w", err)
			}
			return checkKey(k)
		case "ENCRYPTED PRIVATE KEY":
			return nil, errors.New("encrypted PEM keys are not supported: store the key unencrypted with mode 0600")
		}
	}
}

// checkKey accepts the key types DKIM can publish and refuses weak RSA keys.
func checkKey(k any) (crypto.Signer, error) {
	switch k := k.(type) {
	case *rsa.PrivateKey:
		if bits := k.N.BitLen(); bits < MinRSABits {
			return nil, fmt.Errorf("%d-bit %w", bits, ErrWeakKey)
		}
		if err := k.Validate(); err != nil {
			return nil, fmt.Errorf("bad RSA key: %w", err)
		}
		return k, nil
	case ed25519.PrivateKey:
		return k, nil
	default:
		return nil, fmt.Errorf("unsupported key type %T: DKIM signs with RSA or Ed25519 (RFC 8463)", k)
	}
}

// LoadKey reads and parses a PEM key file (see ParseKey). The error names the file.
func LoadKey(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	k, err := ParseKey(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// GenerateKey makes a new key. bits is used for RSA only (0 means
// RecommendedRSABits) and must lie within MinRSABits..MaxRSABits.
func GenerateKey(algo Algorithm, bits int) (crypto.Signer, error) {
	switch algo {
	case RSA:
		if bits == 0 {
			bits = RecommendedRSABits
		}
		if bits < MinRSABits || bits > MaxRSABits {
			return nil, fmt.Errorf("RSA key size %d out of range %d..%d (RFC 8301)", bits, MinRSABits, MaxRSABits)
		}
		return rsa.GenerateKey(rand.Reader, bits)
	case Ed25519:
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	default:
		return nil, fmt.Errorf("unknown key algorithm %q (want rsa or ed25519)", algo)
	}
}

// MarshalKey encodes a private key as a PKCS#8 "PRIVATE KEY" PEM block.
func MarshalKey(k crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPKCS8, Bytes: der}), nil
}

// KeyAlgorithm returns the DKIM type of a key or public key ("" if unsupported).
func KeyAlgorithm(k any) Algorithm {
	if s, ok := k.(crypto.Signer); ok {
		k = s.Public()
	}
	switch k.(type) {
	case *rsa.PublicKey:
		return RSA
	case ed25519.PublicKey:
		return Ed25519
	}
	return ""
}

// KeyBits returns the size of an RSA key's modulus, or 0 for other keys.
func KeyBits(k any) int {
	if s, ok := k.(crypto.Signer); ok {
		k = s.Public()
	}
	if p, ok := k.(*rsa.PublicKey); ok {
		return p.N.BitLen()
	}
	return 0
}

// Describe names a key for humans: "rsa-2048" or "ed25519".
func Describe(k any) string {
	if bits := KeyBits(k); bits > 0 {
		return fmt.Sprintf("%s-%d", RSA, bits)
	}
	return string(KeyAlgorithm(k))
}
