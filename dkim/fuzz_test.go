package dkim

import (
	"bytes"
	"errors"
	"os"
	"testing"

	msgauth "github.com/emersion/go-msgauth/dkim"
)

// FuzzParseKey feeds arbitrary bytes to the key loader: it must never
// panic, and a key it accepts must produce a record that matches it.
// Seeds: the PEM files in testdata plus the corpus in testdata/fuzz.
func FuzzParseKey(f *testing.F) {
	seeds := []string{"testdata/ed25519.pem", "testdata/rsa1024-pkcs1.pem", "testdata/rsa512.pem", "testdata/ecdsa.pem"}
	for _, p := range seeds {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := ParseKey(data)
		if err != nil {
			return
		}
		rec, err := TXTRecord(k)
		if err != nil {
			t.Fatalf("accepted key %s has no record: %v", Describe(k), err)
		}
		if err := MatchRecord(rec, k); err != nil {
			t.Fatalf("record %q does not match its key: %v", rec, err)
		}
	})
}

// FuzzSign feeds arbitrary messages to Sign: it must never panic, and a
// message it signs must verify with go-msgauth's verifier.
func FuzzSign(f *testing.F) {
	f.Add([]byte("From: a@example.com\r\nTo: b@example.net\r\nSubject: x\r\n\r\nbody\r\n"))
	f.Add([]byte("Subject:\r\n\tfolded\r\nFrom: \"A\" <a@example.com>\r\nFrom: b@example.com\r\n\r\n"))
	f.Add([]byte("From\r\nFrom: a@sub.example.com\r\nCc: c\r\n  d\r\n\r\n  x  \r\n\r\n"))
	key := edKeyA()
	record, err := TXTRecord(key)
	if err != nil {
		f.Fatal(err)
	}
	spec := KeySpec{Domain: "example.com", Selector: "s1", KeyFile: writeKey(f, key), Sign: true}
	s, err := NewSigner([]KeySpec{spec}, Options{ParentDomains: true})
	if err != nil {
		f.Fatal(err)
	}
	lookup := func(string) ([]string, error) { return []string{record}, nil }
	f.Fuzz(func(t *testing.T, msg []byte) {
		sigs, result, err := s.Sign(msg)
		if err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("Sign: %v", err)
		}
		if err != nil || sigs == nil || !bytes.Contains(msg, []byte("\r\n\r\n")) {
			return // unsigned, or header-only (go-msgauth cannot verify those)
		}
		vs, err := msgauth.VerifyWithOptions(bytes.NewReader(append(sigs, msg...)), &msgauth.VerifyOptions{LookupTXT: lookup})
		if err != nil || len(vs) != 1 || vs[0].Err != nil {
			t.Fatalf("%s: signed message does not verify: %v %v", result, err, vs[0].Err)
		}
	})
}
