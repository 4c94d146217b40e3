package dkim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// CheckKeys and NewSigner apply the same rules: every error finding is a
// reason NewSigner refuses, and the warnings never are.
func TestCheckKeysRules(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ed := writeKey(t, edKeyA())
	rsa1024 := writeKey(t, mustGenerate(RSA, 1024))
	open := filepath.Join(dir, "open.pem")
	data, _ := os.ReadFile(ed)
	if err := os.WriteFile(open, data, 0o644); err != nil {
		t.Fatal(err)
	}
	weak := filepath.Join(dir, "weak.pem")
	data, _ = os.ReadFile("testdata/rsa512.pem")
	if err := os.WriteFile(weak, data, 0o600); err != nil {
		t.Fatal(err)
	}
	type want struct {
		key      int
		field    string
		severity Severity
		text     string
	}
	cases := []struct {
		name  string
		specs []KeySpec
		want  []want
	}{
		{"good", []KeySpec{{"example.com", "s1", ed, true}}, nil},
		{"weak RSA refused", []KeySpec{{"example.com", "s1", weak, true}},
			[]want{{0, "KeyFile", Error, "refused: " + weak + ": 512-bit RSA key"}}},
		{"1024-bit RSA warned", []KeySpec{{"example.com", "s1", rsa1024, true}},
			[]want{{0, "KeyFile", Warning, "1024-bit RSA key; RFC 8301 §3.1 recommends 2048 bits"}}},
		{"open file warned", []KeySpec{{"example.com", "s1", open, true}},
			[]want{{0, "KeyFile", Warning, "accessible by group or others (mode 0644)"}}},
		{"duplicate selector", []KeySpec{{"example.com", "s1", ed, true}, {"Example.COM.", "s1", ed, true}},
			[]want{{1, "Selector", Error, "s1._domainkey.example.com is configured twice"}}},
		{"bad names", []KeySpec{{"example.com", "a;b", ed, true}, {"a b", "s1", ed, true}},
			[]want{{0, "Selector", Error, "bad selector"}, {1, "Domain", Error, "bad domain"}}},
		{"missing file", []KeySpec{{"example.com", "s1", filepath.Join(dir, "nope.pem"), true}},
			[]want{{0, "KeyFile", Error, "no such file"}}},
		{"domain without a signing key", []KeySpec{{"example.org", "s1", ed, false}, {"example.org", "s2", ed, false}},
			[]want{{0, "", Warning, "no key of example.org has sign: true"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := CheckKeys(tc.specs)
			if len(got) != len(tc.want) {
				t.Fatalf("findings %v, want %d", got, len(tc.want))
			}
			errs := 0
			for i, w := range tc.want {
				f := got[i]
				if f.Key != w.key || f.Field != w.field || f.Severity != w.severity || !strings.Contains(f.Err.Error(), w.text) {
					t.Errorf("finding %d: %+v, want %+v", i, f, w)
				}
				if f.Severity == Error {
					errs++
				}
			}
			_, err := NewSigner(tc.specs, Options{})
			if (err != nil) != (errs > 0) {
				t.Errorf("NewSigner: %v, but CheckKeys found %d errors", err, errs)
			}
			if err != nil {
				if n := len(err.(interface{ Unwrap() []error }).Unwrap()); n != errs {
					t.Errorf("NewSigner reports %d problems, CheckKeys %d errors: %v", n, errs, err)
				}
			}
		})
	}
}

// mapTXT is a TXTResolver over a map (nil value: the lookup fails).
type mapTXT map[string][]string

func (m mapTXT) LookupTXT(_ context.Context, name string) ([]string, error) {
	txts, ok := m[name]
	switch {
	case !ok:
		return nil, fmt.Errorf("%s: %w", name, ErrNoRecord)
	case txts == nil:
		return nil, errors.New("SERVFAIL")
	}
	return txts, nil
}

func TestCheckPublished(t *testing.T) {
	t.Parallel()
	file := writeKey(t, edKeyA())
	good, err := TXTRecord(edKeyA())
	if err != nil {
		t.Fatal(err)
	}
	other, _ := TXTRecord(edKeyB())
	const name = "s1._domainkey.example.com."
	spec := KeySpec{"example.com", "s1", file, true}
	cases := []struct {
		name   string
		dns    mapTXT
		spec   KeySpec
		state  PublishedState
		detail string
	}{
		{"match", mapTXT{name: {good}}, spec, Published, ""},
		{"missing", mapTXT{}, spec, NotFound, ""},
		{"other key", mapTXT{name: {other}}, spec, Mismatch, "p= is a different public key"},
		{"two records", mapTXT{name: {good, good}}, spec, Mismatch, "2 TXT records, want exactly one"},
		{"lookup fails", mapTXT{name: nil}, spec, LookupError, "SERVFAIL"},
		{"bad key file", mapTXT{}, KeySpec{"example.com", "s1", "testdata/rsa512.pem", true}, LookupError, "512-bit"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := CheckPublished(context.Background(), tc.dns, tc.spec)
			if c.State != tc.state || !strings.Contains(c.Detail, tc.detail) || c.Name != "s1._domainkey.example.com" {
				t.Fatalf("%+v, want %s %q", c, tc.state, tc.detail)
			}
			if tc.state != LookupError && !strings.HasPrefix(c.Want, name+` IN TXT "v=DKIM1; k=ed25519; p=`) {
				t.Errorf("want line %q", c.Want)
			}
		})
	}
}
