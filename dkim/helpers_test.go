package dkim

import (
	"bytes"
	"crypto"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	msgauth "github.com/emersion/go-msgauth/dkim"
	"github.com/miekg/dns"
)

// Generated keys are shared by the tests: RSA generation is slow under -race.
var (
	rsaKeyA = sync.OnceValue(func() crypto.Signer { return mustGenerate(RSA, 2048) })
	rsaKeyB = sync.OnceValue(func() crypto.Signer { return mustGenerate(RSA, 2048) })
	edKeyA  = sync.OnceValue(func() crypto.Signer { return mustGenerate(Ed25519, 0) })
	edKeyB  = sync.OnceValue(func() crypto.Signer { return mustGenerate(Ed25519, 0) })
)

func mustGenerate(a Algorithm, bits int) crypto.Signer {
	k, err := GenerateKey(a, bits)
	if err != nil {
		panic(err)
	}
	return k
}

// writeKey stores key as a 0600 PEM file in a temporary directory.
func writeKey(t testing.TB, key crypto.Signer) string {
	t.Helper()
	pemBytes, err := MarshalKey(key)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(p, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// testKey is a key with where it is published, for building signers and DNS.
type testKey struct {
	domain, selector string
	key              crypto.Signer
	noSign           bool
}

// setup builds a Signer for keys and a zone holding every key's record,
// taken from ZoneLine exactly as keygen prints it.
func setup(t testing.TB, o Options, keys ...testKey) (*Signer, zoneTXT) {
	t.Helper()
	fake := zoneTXT{}
	specs := make([]KeySpec, 0, len(keys))
	for _, k := range keys {
		specs = append(specs, KeySpec{Domain: k.domain, Selector: k.selector, KeyFile: writeKey(t, k.key), Sign: !k.noSign})
		line, err := ZoneLine(k.selector, k.domain, k.key)
		if err != nil {
			t.Fatal(err)
		}
		fake.Add(t, line)
	}
	s, err := NewSigner(specs, o)
	if err != nil {
		t.Fatal(err)
	}
	return s, fake
}

// message builds a CRLF message with a body of about bodySize bytes.
func message(from string, bodySize int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "Received: from app (app [192.0.2.1]) by relay; Tue, 1 Jul 2025 10:00:00 +0000\r\n")
	fmt.Fprintf(&b, "From: %s\r\nTo: Bob <bob@example.net>\r\nSubject: Invoice 42\r\n", from)
	b.WriteString("Date: Tue, 1 Jul 2025 10:00:00 +0000\r\nMessage-ID: <42@example.com>\r\n")
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n")
	line := "Hello Bob,  here is   your invoice.\t Thanks.\r\n"
	for b.Len() < bodySize || bodySize == 0 {
		b.WriteString(line)
		if bodySize == 0 {
			break
		}
	}
	return b.Bytes()
}

// signed signs msg and returns the signatures prepended, the result and the raw sigs.
func signed(t testing.TB, s *Signer, msg []byte) (full []byte, result string, sigs []byte) {
	t.Helper()
	sigs, result, err := s.Sign(msg)
	if err != nil {
		t.Fatal(err)
	}
	if len(sigs) > 0 && !bytes.HasSuffix(sigs, []byte("\r\n")) {
		t.Fatalf("signatures not CRLF-terminated: %q", sigs)
	}
	return append(append([]byte(nil), sigs...), msg...), result, sigs
}

// zoneTXT maps a lower-case FQDN to its TXT records, each record's strings
// concatenated (RFC 6376 §3.6.2.2). dkim's tests need no DNS server: the
// records are what a resolver would hand over.
type zoneTXT map[string][]string

// Add parses a zone-file line (a TXT record as keygen prints it) with
// miekg/dns's zone parser, so a malformed line fails the test.
func (z zoneTXT) Add(t testing.TB, zoneLine string) {
	t.Helper()
	rr, err := dns.NewRR(zoneLine)
	if err != nil {
		t.Fatalf("zone line %q: %v", zoneLine, err)
	}
	txt, ok := rr.(*dns.TXT)
	if !ok {
		t.Fatalf("zone line %q is a %T, want TXT", zoneLine, rr)
	}
	for _, s := range txt.Txt {
		if len(s) > 255 {
			t.Fatalf("zone line %q: string of %d characters (max 255)", zoneLine, len(s))
		}
	}
	name := strings.ToLower(txt.Hdr.Name)
	z[name] = append(z[name], strings.Join(txt.Txt, ""))
}

// LookupTXT has the shape of go-msgauth's VerifyOptions.LookupTXT; an
// unknown name is a not-found error as a resolver reports it.
func (z zoneTXT) LookupTXT(name string) ([]string, error) {
	txts, ok := z[strings.ToLower(dns.Fqdn(name))]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
	}
	return txts, nil
}

// verify runs go-msgauth's verifier with the zone.
func verify(t testing.TB, fake zoneTXT, msg []byte) []*msgauth.Verification {
	t.Helper()
	vs, err := msgauth.VerifyWithOptions(bytes.NewReader(msg), &msgauth.VerifyOptions{LookupTXT: fake.LookupTXT})
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

// requireValid fails unless there are n verifications, all valid for domain.
func requireValid(t testing.TB, vs []*msgauth.Verification, n int, domain string) {
	t.Helper()
	if len(vs) != n {
		t.Fatalf("%d signatures, want %d", len(vs), n)
	}
	for i, v := range vs {
		if v.Err != nil {
			t.Errorf("signature %d: %v", i, v.Err)
		} else if v.Domain != domain {
			t.Errorf("signature %d: d=%s, want %s", i, v.Domain, domain)
		}
	}
}

// sigTags parses the tags of a single DKIM-Signature field.
func sigTags(t testing.TB, sig []byte) map[string]string {
	t.Helper()
	_, v, ok := strings.Cut(string(sig), ":")
	if !ok {
		t.Fatalf("not a header field: %q", sig)
	}
	tags, err := parseTags(stripFWS(v))
	if err != nil {
		t.Fatal(err)
	}
	return tags
}
