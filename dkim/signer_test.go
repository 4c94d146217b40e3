package dkim

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestSignVerifies(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, algo string
		key        testKey
	}{
		{"rsa-2048", "rsa-sha256", testKey{"example.com", "s2026", rsaKeyA(), false}},
		{"ed25519", "ed25519-sha256", testKey{"example.com", "ed2026", edKeyA(), false}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, fake := setup(t, Options{}, tc.key)
			full, result, sigs := signed(t, s, message("Alice <Alice@Example.COM>", 4096))
			if want := "d=example.com s=" + tc.key.selector; result != want {
				t.Errorf("result %q, want %q", result, want)
			}
			requireValid(t, verify(t, fake, full), 1, "example.com")
			tags := sigTags(t, sigs)
			if tags["a"] != tc.algo || tags["c"] != "relaxed/relaxed" {
				t.Errorf("a=%s c=%s", tags["a"], tags["c"])
			}
			// Over-signed fields appear once more than present (RFC 6376 §5.4.2);
			// Received is not signed.
			for _, want := range []string{"From:From", "Subject:Subject", "Date:Date", "To:To", "Cc", "Reply-To"} {
				if !strings.Contains(tags["h"], want) {
					t.Errorf("h=%s lacks %s", tags["h"], want)
				}
			}
			if strings.Contains(strings.ToLower(tags["h"]), "received") {
				t.Errorf("h=%s signs Received", tags["h"])
			}
			if _, ok := tags["x"]; ok {
				t.Error("x= without a lifetime")
			}
		})
	}
}

func TestDualSigningGivesTwoValidSignatures(t *testing.T) {
	t.Parallel()
	s, fake := setup(t, Options{},
		testKey{"example.com", "rsa1", rsaKeyA(), false},
		testKey{"example.com", "ed1", edKeyA(), false})
	full, result, sigs := signed(t, s, message("a@example.com", 2000))
	if result != "d=example.com s=rsa1,ed1" {
		t.Errorf("result %q", result)
	}
	if n := bytes.Count(sigs, []byte("DKIM-Signature:")); n != 2 {
		t.Fatalf("%d DKIM-Signature fields", n)
	}
	requireValid(t, verify(t, fake, full), 2, "example.com")
}

// A header field added after signing must break the signature: that is what
// over-signing is for (RFC 6376 §8.15). Unsigned trace fields must not.
func TestAddedHeaderBreaksSignature(t *testing.T) {
	t.Parallel()
	s, fake := setup(t, Options{},
		testKey{"example.com", "rsa1", rsaKeyA(), false},
		testKey{"example.com", "ed1", edKeyA(), false})
	orig, _, sigs := signed(t, s, message("a@example.com", 1000))
	_, msg, _ := bytes.Cut(orig, sigs) // without the signatures
	cases := []struct {
		name   string
		mutate func([]byte) []byte
		breaks bool
	}{
		{"second From on top", prepend("From: ceo@example.com\r\n"), true},
		{"second From at the end", appendHeader("From: ceo@example.com\r\n"), true},
		{"second Subject", prepend("Subject: Urgent: wire money\r\n"), true},
		{"added Reply-To", appendHeader("Reply-To: thief@example.org\r\n"), true},
		{"added Cc", appendHeader("Cc: x@example.org\r\n"), true},
		{"second Content-Type", appendHeader("Content-Type: text/html\r\n"), true},
		{"body changed", func(m []byte) []byte { return append(m, "P.S. pay here\r\n"...) }, true},
		{"added Received", prepend("Received: from relay2\r\n"), false},
		{"refolded Subject", func(m []byte) []byte {
			return bytes.Replace(m, []byte("Subject: Invoice 42"), []byte("Subject:  Invoice\r\n  42"), 1)
		}, false}, // relaxed header canonicalisation
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			full := append(append([]byte(nil), sigs...), tc.mutate(bytes.Clone(msg))...)
			vs := verify(t, fake, full)
			if len(vs) != 2 {
				t.Fatalf("%d verifications", len(vs))
			}
			for _, v := range vs {
				if got := v.Err != nil; got != tc.breaks {
					t.Errorf("broken=%v, want %v (err %v)", got, tc.breaks, v.Err)
				}
			}
		})
	}
}

func prepend(field string) func([]byte) []byte {
	return func(m []byte) []byte { return append([]byte(field), m...) }
}

func appendHeader(field string) func([]byte) []byte {
	return func(m []byte) []byte {
		return bytes.Replace(m, []byte("\r\n\r\n"), []byte("\r\n"+strings.TrimSuffix(field, "\r\n")+"\r\n\r\n"), 1)
	}
}

func TestParentDomains(t *testing.T) {
	t.Parallel()
	keys := []testKey{{"example.com", "s1", edKeyA(), false}, {"com", "tld", edKeyB(), false}}
	cases := []struct {
		name    string
		parents bool
		from    string
		want    string
	}{
		{"exact domain", false, "a@example.com", "d=example.com s=s1"},
		{"subdomain without parent_domains", false, "a@mail.example.com", ResultNone},
		{"subdomain", true, "a@mail.example.com", "d=example.com s=s1"},
		{"deep subdomain", true, "a@x.y.mail.example.com", "d=example.com s=s1"},
		{"never a top-level domain", true, "a@example.org", ResultNone},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, fake := setup(t, Options{ParentDomains: tc.parents}, keys...)
			full, result, _ := signed(t, s, message(tc.from, 500))
			if result != tc.want {
				t.Fatalf("result %q, want %q", result, tc.want)
			}
			if tc.want != ResultNone {
				requireValid(t, verify(t, fake, full), 1, "example.com")
			}
		})
	}
}

func TestSignFalseKeysDoNotSign(t *testing.T) {
	t.Parallel()
	s, fake := setup(t, Options{},
		testKey{"example.com", "old", rsaKeyA(), true},
		testKey{"example.com", "new", edKeyA(), false},
		testKey{"example.org", "retired", edKeyB(), true})
	full, result, _ := signed(t, s, message("a@example.com", 500))
	if result != "d=example.com s=new" {
		t.Errorf("result %q", result)
	}
	requireValid(t, verify(t, fake, full), 1, "example.com")
	if _, result, _ := signed(t, s, message("a@example.org", 500)); result != ResultNone {
		t.Errorf("only sign:false keys: result %q", result)
	}
	if n := len(s.Keys()); n != 3 {
		t.Errorf("Keys() has %d keys, want all 3 (published keys included)", n)
	}
}

func TestUnsignedMessages(t *testing.T) {
	t.Parallel()
	s, _ := setup(t, Options{}, testKey{"example.com", "s1", edKeyA(), false})
	cases := map[string][]byte{
		"other domain":    message("a@example.net", 100),
		"no From":         []byte("To: b@example.com\r\nSubject: x\r\n\r\nbody\r\n"),
		"unparseable":     []byte("From: <<<@@@\r\n\r\nbody\r\n"),
		"empty message":   nil,
		"no header end":   []byte("From a@example.com"),
		"address literal": message("a@[192.0.2.1]", 100),
	}
	for name, msg := range cases {
		sigs, result, err := s.Sign(msg)
		if err != nil || sigs != nil || result != ResultNone {
			t.Errorf("%s: sigs=%q result=%q err=%v", name, sigs, result, err)
		}
	}
}

// A message that starts with a folded line would fold into the prepended
// signature: it is refused as malformed, but only when it would be signed.
func TestSignRefusesLeadingFold(t *testing.T) {
	t.Parallel()
	s, _ := setup(t, Options{}, testKey{"example.com", "s1", edKeyA(), false})
	if _, _, err := s.Sign([]byte(" x\r\nFrom: a@example.com\r\n\r\nbody\r\n")); !errors.Is(err, ErrMalformed) {
		t.Errorf("err = %v, want ErrMalformed", err)
	}
	if _, result, err := s.Sign([]byte(" x\r\nFrom: a@example.org\r\n\r\nbody\r\n")); err != nil || result != ResultNone {
		t.Errorf("unsigned domain: %q %v", result, err)
	}
}

func TestSignUnusualHeaders(t *testing.T) {
	t.Parallel()
	s, fake := setup(t, Options{}, testKey{"example.com", "s1", edKeyA(), false})
	cases := map[string][]byte{
		"folded From":        []byte("Subject: hi\r\nFrom: \"A very long display name\"\r\n <a@EXAMPLE.com>\r\n\r\nbody\r\n"),
		"unknown charset":    []byte("From: =?x-unknown?q?B=E9b?= <a@example.com>\r\n\r\nbody\r\n"),
		"header only":        []byte("From: a@example.com\r\nSubject: no body\r\n"),
		"empty body":         []byte("From: a@example.com\r\n\r\n"),
		"folded Subject":     []byte("From: a@example.com\r\nSubject:\r\n\tfolded  \r\n  twice \t\r\n\r\nx\r\n"),
		"two From mailboxes": []byte("From: a@example.com, b@example.net\r\nSender: a@example.com\r\n\r\nx\r\n"),
	}
	for name, msg := range cases {
		full, result, _ := signed(t, s, msg)
		if result != "d=example.com s=s1" {
			t.Errorf("%s: result %q", name, result)
			continue
		}
		if !bytes.Contains(full, []byte("\r\n\r\n")) {
			full = append(full, "\r\n"...) // header-only: verifiers need the empty line too
		}
		vs := verify(t, fake, full)
		if len(vs) != 1 || vs[0].Err != nil {
			t.Errorf("%s: %+v", name, vs[0])
		}
	}
}

func TestLifetimeSetsExpiry(t *testing.T) {
	t.Parallel()
	now := time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)
	s, fake := setup(t, Options{Lifetime: 72 * time.Hour, Now: func() time.Time { return now }},
		testKey{"example.com", "s1", edKeyA(), false})
	full, _, sigs := signed(t, s, message("a@example.com", 100))
	if x := sigTags(t, sigs)["x"]; x != strconv.FormatInt(now.Add(72*time.Hour).Unix(), 10) {
		t.Errorf("x=%s, want %d", x, now.Add(72*time.Hour).Unix())
	}
	vs := verify(t, fake, full)
	requireValid(t, vs, 1, "example.com")
	if !vs[0].Expiration.Equal(now.Add(72 * time.Hour)) {
		t.Errorf("verifier saw expiry %v", vs[0].Expiration)
	}
	if _, err := NewSigner(nil, Options{Lifetime: -time.Second}); err == nil {
		t.Error("negative lifetime accepted")
	}
}

func TestNewSignerRefusesBadKeys(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := writeKey(t, edKeyA())
	cases := []struct {
		name string
		spec KeySpec
		want string
	}{
		{"missing file", KeySpec{"example.com", "s1", filepath.Join(dir, "nope.pem"), true}, "no such file"},
		{"garbage", KeySpec{"example.com", "s1", garbage, true}, "no PEM private key"},
		{"512-bit RSA", KeySpec{"example.com", "s1", "testdata/rsa512.pem", true}, "512-bit RSA key is shorter than 1024"},
		{"ECDSA", KeySpec{"example.com", "s1", "testdata/ecdsa.pem", true}, "unsupported key type"},
		{"bad selector", KeySpec{"example.com", "a b", good, true}, "bad selector"},
		{"sign:false is loaded too", KeySpec{"example.com", "s1", garbage, false}, "no PEM private key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewSigner([]KeySpec{tc.spec}, Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewSigner = %v, %v; want error containing %q", s, err, tc.want)
			}
		})
	}
	t.Run("duplicate selector and every problem at once", func(t *testing.T) {
		_, err := NewSigner([]KeySpec{
			{"example.com", "s1", good, true}, {"Example.com", "s1", good, true}, {"example.org", "s1", garbage, true},
		}, Options{})
		if err == nil || !strings.Contains(err.Error(), "configured twice") || !strings.Contains(err.Error(), "garbage.pem") {
			t.Fatalf("err = %v", err)
		}
		if n := len(err.(interface{ Unwrap() []error }).Unwrap()); n != 2 {
			t.Errorf("%d problems reported, want 2: %v", n, err)
		}
	})
}

// A hostile header is signed correctly: thousands of unsigned fields, a
// field folded into thousands of lines and more copies of a field than
// maxSignedCopies (h= lists at most that many). Its speed (go-msgauth
// joins folded lines quadratically) is BenchmarkSignHostileHeader's.
func TestSignHostileHeader(t *testing.T) {
	t.Parallel()
	s, fake := setup(t, Options{}, testKey{"example.com", "s1", edKeyA(), false})
	full, _, sigs := signed(t, s, hostileHeader())
	h := sigTags(t, sigs)["h"]
	n := 0
	for _, k := range strings.Split(h, ":") {
		if k == "To" {
			n++
		}
	}
	if n != maxSignedCopies {
		t.Errorf("h= lists To %d times, want %d (the cap, no over-signing): %s", n, maxSignedCopies, h)
	}
	requireValid(t, verify(t, fake, full), 1, "example.com")
}

// Submission signs from many goroutines at once: run under -race.
func TestSignConcurrently(t *testing.T) {
	t.Parallel()
	s, fake := setup(t, Options{Lifetime: time.Hour},
		testKey{"example.com", "rsa1", rsaKeyA(), false},
		testKey{"example.com", "ed1", edKeyA(), false})
	// The workers only sign (t.Fatal must not run outside the test's
	// goroutine); the signatures are checked after they are done.
	const workers, each = 8, 5
	full := make([][]byte, workers*each)
	errs := make([]error, workers*each)
	var wg sync.WaitGroup
	for g := range workers {
		wg.Go(func() {
			for i := range each {
				msg := message("a@example.com", 1000*(g+1)+i)
				sigs, _, err := s.Sign(msg)
				full[g*each+i], errs[g*each+i] = append(sigs, msg...), err
			}
		})
	}
	wg.Wait()
	for i := range full {
		if errs[i] != nil {
			t.Fatalf("message %d: %v", i, errs[i])
		}
		requireValid(t, verify(t, fake, full[i]), 2, "example.com")
	}
}

// hostileHeader is a message with 10,000 unsigned fields, 3×maxSignedCopies
// To fields and a Subject folded into 20,000 lines.
func hostileHeader() []byte {
	var b bytes.Buffer
	for range 10000 {
		b.WriteString("Received: from x by y; Tue, 1 Jul 2025 10:00:00 +0000\r\n")
	}
	for range 3 * maxSignedCopies {
		b.WriteString("To: b@example.net\r\n")
	}
	b.WriteString("From: a@example.com\r\nSubject: x")
	for range 20000 {
		b.WriteString("\r\n y")
	}
	b.WriteString("\r\n\r\nbody\r\n")
	return b.Bytes()
}
