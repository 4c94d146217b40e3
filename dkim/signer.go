// Package dkim owns jetrelay's DomainKeys Identified Mail: the signing keys
// (load, generate, the DNS record to publish), the key rules (CheckKeys:
// what NewSigner refuses and what `jetrelay check` warns about, one
// implementation for both), the check of a published record against its
// key (CheckPublished, through a TXTResolver the caller passes), and the
// Signer that submission calls once per message, before it is queued.
// It imports nothing of relay.
//
// Promises:
//   - Every key is read and parsed once, in NewSigner; a missing or bad key
//     file is an error there, so a relay never starts that would send mail
//     unsigned by accident.
//   - Sign is safe for concurrent use and takes no lock: the Signer is
//     immutable after NewSigner.
//   - Signatures use rsa-sha256 or ed25519-sha256 (RFC 8463), relaxed/relaxed
//     canonicalisation (RFC 6376 §3.4), an explicit list of signed header
//     fields (RFC 6376 §5.4.1) with the fields a reader sees over-signed
//     (§5.4.2), and x= when a lifetime is configured.
//   - A message whose From domain has no signing key is returned unsigned
//     with the result "none"; that is not an error.
//
// The Signer does not decide who may use a From domain: submission's sender
// policy must do that before asking for a signature.
package dkim

import (
	"crypto"
	"errors"
	"fmt"
	"strings"
	"time"

	msgauth "github.com/emersion/go-msgauth/dkim"
)

// ResultNone is Sign's result for a message it did not sign.
const ResultNone = "none"

// ErrMalformed is wrapped by Sign's error for a message that cannot carry a
// signature: its first line is a continuation line, which would fold into
// the prepended DKIM-Signature. It is the sender's fault (RFC 3463 5.6.0).
var ErrMalformed = errors.New("message header starts with a folded line")

// KeySpec names one configured key.
type KeySpec struct {
	Domain   string // the d= domain
	Selector string // the s= selector
	KeyFile  string // PEM private key (see ParseKey)
	Sign     bool   // false: loaded and published, never used to sign
}

// Options tune signing.
type Options struct {
	// ParentDomains lets a key for example.com sign mail from
	// sub.example.com when sub.example.com has no signing key of its own.
	ParentDomains bool
	// Lifetime, when positive, sets x= that long after signing (RFC 6376 §3.5).
	Lifetime time.Duration
	// Now is the clock for x=; nil means time.Now. (t= is set by go-msgauth
	// from its own clock.)
	Now func() time.Time
}

// Key is one loaded key with where it is published.
type Key struct {
	Domain   string
	Selector string
	File     string
	Sign     bool
	Signer   crypto.Signer // *rsa.PrivateKey or ed25519.PrivateKey
}

// Signer signs messages with the configured keys. It is immutable and safe
// for concurrent use.
type Signer struct {
	keys     []Key
	byDomain map[string][]Key // signing keys only, in configuration order
	parents  bool
	lifetime time.Duration
	now      func() time.Time
}

// NewSigner loads every key (each file once) and checks the set with the
// rules of CheckKeys; its errors (never its warnings) refuse the set, all
// reported together.
func NewSigner(specs []KeySpec, o Options) (*Signer, error) {
	if o.Lifetime < 0 {
		return nil, fmt.Errorf("dkim: negative signature lifetime %s", o.Lifetime)
	}
	s := &Signer{
		byDomain: make(map[string][]Key),
		parents:  o.ParentDomains,
		lifetime: o.Lifetime,
		now:      o.Now,
	}
	if s.now == nil {
		s.now = time.Now
	}
	keys, findings := checkKeys(specs)
	var errs []error
	for _, f := range findings {
		if f.Severity == Error {
			errs = append(errs, fmt.Errorf("dkim key %d%s: %w", f.Key, specID(specs[f.Key]), f.Err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	s.keys = keys
	for _, k := range keys {
		if k.Sign {
			s.byDomain[k.Domain] = append(s.byDomain[k.Domain], k)
		}
	}
	return s, nil
}

// specID names a spec's key record in errors: " (sel._domainkey.example.com)".
func specID(spec KeySpec) string {
	d := normalizeDomain(spec.Domain)
	if CheckNames(d, spec.Selector) != nil {
		return ""
	}
	return " (" + spec.Selector + "._domainkey." + d + ")"
}

// CheckNames refuses a domain or selector that cannot form a key record
// name (RFC 6376 §3.1: selectors are dot-separated sub-domains).
func CheckNames(domain, selector string) error {
	if domain == "" || strings.ContainsAny(domain, " \t@;\"") {
		return fmt.Errorf("bad domain %q", domain)
	}
	if selector == "" || strings.ContainsAny(selector, " \t@;\"") ||
		strings.HasPrefix(selector, ".") || strings.HasSuffix(selector, ".") {
		return fmt.Errorf("bad selector %q", selector)
	}
	return nil
}

// Keys returns every loaded key, signing or not, in configuration order.
func (s *Signer) Keys() []Key { return append([]Key(nil), s.keys...) }

// keysFor returns the signing keys for a From domain and the d= domain
// they belong to, walking up to parent domains if allowed.
func (s *Signer) keysFor(domain string) ([]Key, string) {
	for domain != "" {
		if keys := s.byDomain[domain]; len(keys) > 0 {
			return keys, domain
		}
		if !s.parents {
			break
		}
		_, parent, ok := strings.Cut(domain, ".")
		if !ok || !strings.Contains(parent, ".") {
			break // never sign for a top-level domain
		}
		domain = parent
	}
	return nil, ""
}

// Sign returns the DKIM-Signature header field(s) to prepend to msg, each
// CRLF-terminated, one per signing key of the header From domain (RSA and
// Ed25519 side by side, RFC 8463 §1), and a result for the accept log line:
// ResultNone when no key covers the From domain (sigs is nil), else
// "d=example.com s=sel1,sel2". An error wraps ErrMalformed for a message
// that cannot be signed, else it is an internal failure (a signing key
// that stopped working). msg is a whole RFC 5322 message with CRLF
// line endings; it is never modified, and only its signed header fields are
// copied.
func (s *Signer) Sign(msg []byte) (sigs []byte, result string, err error) {
	h := scanHeader(msg)
	keys, domain := s.keysFor(fromDomain(h.from(msg)))
	if len(keys) == 0 {
		return nil, ResultNone, nil
	}
	if msg[0] == ' ' || msg[0] == '\t' {
		return nil, "", fmt.Errorf("dkim: %w", ErrMalformed)
	}
	hdr, headerKeys := h.signedHeader(msg)
	opts := msgauth.SignOptions{
		Domain: domain,
		// Relaxed headers are required by signedHeader's unfolding.
		HeaderCanonicalization: msgauth.CanonicalizationRelaxed,
		BodyCanonicalization:   msgauth.CanonicalizationRelaxed,
		HeaderKeys:             headerKeys,
	}
	if s.lifetime > 0 {
		opts.Expiration = s.now().Add(s.lifetime)
	}
	selectors := make([]string, 0, len(keys))
	for _, k := range keys {
		opts.Selector, opts.Signer = k.Selector, k.Signer
		sig, err := signOne(hdr, msg[h.bodyStart:], &opts)
		if err != nil {
			return nil, "", fmt.Errorf("dkim: sign d=%s s=%s: %w", domain, k.Selector, err)
		}
		sigs = append(sigs, sig...)
		selectors = append(selectors, k.Selector)
	}
	return sigs, "d=" + domain + " s=" + strings.Join(selectors, ","), nil
}

// signOne computes one signature, streaming header and body to go-msgauth.
func signOne(header, body []byte, opts *msgauth.SignOptions) (string, error) {
	w, err := msgauth.NewSigner(opts)
	if err != nil {
		return "", err
	}
	_, err = w.Write(header)
	if err == nil {
		_, err = w.Write(body)
	}
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", err
	}
	return w.Signature(), nil
}
