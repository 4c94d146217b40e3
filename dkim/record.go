package dkim

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// maxTXTString is the longest character-string a TXT record can hold
// (RFC 1035 §3.3: one length octet). Longer values are split into several
// strings, which receivers concatenate (RFC 6376 §3.6.2.2).
const maxTXTString = 255

// RecordName is the owner name of a key record, fully qualified:
// "sel._domainkey.example.com." (RFC 6376 §3.6.2.1).
func RecordName(selector, domain string) string {
	return selector + "._domainkey." + strings.TrimSuffix(strings.ToLower(domain), ".") + "."
}

// TXTRecord is the key record's text for a public (or private) key:
// "v=DKIM1; k=rsa; p=<base64 SubjectPublicKeyInfo>" (RFC 6376 §3.6.1) or
// "v=DKIM1; k=ed25519; p=<base64 of the raw 32-byte key>" (RFC 8463 §4.2).
func TXTRecord(key any) (string, error) {
	p, err := publicKeyData(key)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("v=DKIM1; k=%s; p=%s", KeyAlgorithm(key), base64.StdEncoding.EncodeToString(p)), nil
}

// publicKeyData is the p= payload before base64.
func publicKeyData(key any) ([]byte, error) {
	if s, ok := key.(crypto.Signer); ok {
		key = s.Public()
	}
	switch pub := key.(type) {
	case *rsa.PublicKey:
		return x509.MarshalPKIXPublicKey(pub)
	case ed25519.PublicKey:
		return []byte(pub), nil
	}
	return nil, fmt.Errorf("unsupported key type %T", key)
}

// ZoneLine is the record to publish as one zone-file line, with the text
// split into quoted strings of at most 255 characters:
//
//	sel._domainkey.example.com. IN TXT "v=DKIM1; k=rsa; p=MIIB…" "…"
func ZoneLine(selector, domain string, key any) (string, error) {
	txt, err := TXTRecord(key)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString(RecordName(selector, domain))
	b.WriteString(" IN TXT")
	// The record text is base64 and "v=DKIM1; k=…; p=": nothing needs quoting.
	for len(txt) > 0 {
		n := min(len(txt), maxTXTString)
		b.WriteString(` "`)
		b.WriteString(txt[:n])
		b.WriteString(`"`)
		txt = txt[n:]
	}
	return b.String(), nil
}

// ErrKeyRevoked is returned by MatchRecord for a record with an empty p=
// (RFC 6376 §3.6.1).
var ErrKeyRevoked = errors.New("the record revokes the key (empty p=)")

// MatchRecord checks that a published key record (its strings already
// concatenated) is a valid DKIM record for key: v=DKIM1 if present, the
// same k= type (default rsa) and the same public key in p=. RSA records
// may hold SubjectPublicKeyInfo or bare RSAPublicKey (RFC 6376 erratum 3017).
func MatchRecord(record string, key any) error {
	tags, err := parseTags(record)
	if err != nil {
		return err
	}
	if v, ok := tags["v"]; ok && v != "DKIM1" {
		return fmt.Errorf("v=%s, want DKIM1", v)
	}
	k := tags["k"]
	if k == "" {
		k = string(RSA)
	}
	if want := KeyAlgorithm(key); Algorithm(k) != want {
		return fmt.Errorf("record has k=%s, the key is %s", k, want)
	}
	p, ok := tags["p"]
	if !ok {
		return errors.New("record has no p= tag")
	}
	p = stripFWS(p)
	if p == "" {
		return ErrKeyRevoked
	}
	got, err := base64.StdEncoding.DecodeString(p)
	if err != nil {
		return fmt.Errorf("p= is not base64: %w", err)
	}
	want, err := publicKeyData(key)
	if err != nil {
		return err
	}
	if bytes.Equal(got, want) {
		return nil
	}
	if pub, ok := publicOf(key).(*rsa.PublicKey); ok {
		if alt, err := x509.ParsePKCS1PublicKey(got); err == nil && alt.Equal(pub) {
			return nil
		}
	}
	return errors.New("p= is a different public key")
}

func publicOf(key any) any {
	if s, ok := key.(crypto.Signer); ok {
		return s.Public()
	}
	return key
}

// parseTags splits a tag=value list (RFC 6376 §3.2); duplicate tags are an error.
func parseTags(s string) (map[string]string, error) {
	tags := make(map[string]string)
	for _, part := range strings.Split(s, ";") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		name, value, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("malformed tag %q", strings.TrimSpace(part))
		}
		name = strings.TrimSpace(name)
		if _, dup := tags[name]; dup {
			return nil, fmt.Errorf("duplicate tag %s=", name)
		}
		tags[name] = strings.TrimSpace(value)
	}
	return tags, nil
}

// stripFWS removes the whitespace RFC 6376 §3.6.1 allows inside p=.
func stripFWS(s string) string {
	return strings.Map(func(r rune) rune {
		if r == ' ' || r == '\t' || r == '\r' || r == '\n' {
			return -1
		}
		return r
	}, s)
}
