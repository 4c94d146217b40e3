package dkim

import (
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

func TestParseKeyFormats(t *testing.T) {
	t.Parallel()
	rsaKey := rsaKeyA().(*rsa.PrivateKey)
	pkcs1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)})
	pkcs8RSA, _ := MarshalKey(rsaKey)
	pkcs8Ed, _ := MarshalKey(edKeyA())
	ecParams := []byte("-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n")
	withParams := append(ecParams, pkcs8Ed...)
	cases := []struct {
		name, file string
		data       []byte
		want       string // Describe() of the key, or an error substring
	}{
		{"PKCS#1 RSA", "", pkcs1, "rsa-2048"},
		{"PKCS#8 RSA", "", pkcs8RSA, "rsa-2048"},
		{"PKCS#8 Ed25519", "", pkcs8Ed, "ed25519"},
		{"other blocks first", "", withParams, "ed25519"},
		{"openssl ed25519", "testdata/ed25519.pem", nil, "ed25519"},
		{"openssl PKCS#1 1024", "testdata/rsa1024-pkcs1.pem", nil, "rsa-1024"},
		{"512-bit RSA refused", "testdata/rsa512.pem", nil, "512-bit RSA key is shorter than 1024 bits"},
		{"ECDSA", "testdata/ecdsa.pem", nil, "unsupported key type"},
		{"empty", "", nil, "no PEM private key"},
		{"public key only", "", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1}}), "no PEM private key"},
		{"encrypted", "",
			[]byte("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"), "encrypted"},
		{"corrupt PKCS#8", "", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{0x30, 1, 2}}), "bad PKCS#8"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			data := tc.data
			if tc.file != "" {
				var err error
				if data, err = os.ReadFile(tc.file); err != nil {
					t.Fatal(err)
				}
			}
			k, err := ParseKey(data)
			got := ""
			if err != nil {
				got = err.Error()
			} else {
				got = Describe(k)
			}
			if !strings.Contains(got, tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
	if _, err := ParseKey(mustRead(t, "testdata/rsa512.pem")); !errors.Is(err, ErrWeakKey) {
		t.Errorf("512-bit key: %v does not wrap ErrWeakKey", err)
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestGenerateKey(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		algo Algorithm
		bits int
		want string
	}{
		{RSA, 512, "out of range"},
		{RSA, 8192, "out of range"},
		{"dsa", 0, "unknown key algorithm"},
		{Ed25519, 0, "ed25519"},
		{RSA, 1024, "rsa-1024"},
	} {
		k, err := GenerateKey(tc.algo, tc.bits)
		got := ""
		if err != nil {
			got = err.Error()
		} else {
			got = Describe(k)
		}
		if !strings.Contains(got, tc.want) {
			t.Errorf("GenerateKey(%s, %d) = %q, want %q", tc.algo, tc.bits, got, tc.want)
		}
	}
}

// The line keygen prints must parse as a zone-file TXT record whose strings
// are at most 255 characters and concatenate to a valid DKIM key record.
func TestZoneLineIsAValidRecord(t *testing.T) {
	t.Parallel()
	for _, k := range []testKey{{"Example.com", "s2026", rsaKeyA(), false}, {"example.com.", "ed", edKeyA(), false}} {
		line, err := ZoneLine(k.selector, k.domain, k.key)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(line, "\n") {
			t.Fatalf("not one line: %q", line)
		}
		rr, err := dns.NewRR(line)
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		txt := rr.(*dns.TXT)
		if want := k.selector + "._domainkey.example.com."; txt.Hdr.Name != want {
			t.Errorf("name %q, want %q", txt.Hdr.Name, want)
		}
		for _, s := range txt.Txt {
			if len(s) > 255 {
				t.Errorf("string of %d characters", len(s))
			}
		}
		record := strings.Join(txt.Txt, "")
		if err := MatchRecord(record, k.key); err != nil {
			t.Errorf("%s: %v", record, err)
		}
		tags, _ := parseTags(record)
		p, _ := base64.StdEncoding.DecodeString(tags["p"])
		switch key := k.key.(type) {
		case *rsa.PrivateKey:
			if len(txt.Txt) != 2 || tags["k"] != "rsa" || !strings.HasPrefix(record, "v=DKIM1; ") {
				t.Errorf("RSA-2048 record: %d strings, %q", len(txt.Txt), record)
			}
			if pub, err := x509.ParsePKIXPublicKey(p); err != nil || !key.PublicKey.Equal(pub) {
				t.Errorf("p= is not the SubjectPublicKeyInfo: %v", err)
			}
		case ed25519.PrivateKey:
			if tags["k"] != "ed25519" || len(p) != ed25519.PublicKeySize { // RFC 8463 §4.2
				t.Errorf("Ed25519 record %q: p= has %d bytes", record, len(p))
			}
		}
	}
}

func TestMatchRecord(t *testing.T) {
	t.Parallel()
	rsaKey := rsaKeyA().(*rsa.PrivateKey)
	good, _ := TXTRecord(rsaKey)
	other, _ := TXTRecord(rsaKeyB())
	ed, _ := TXTRecord(edKeyA())
	pkcs1 := "v=DKIM1; p=" + base64.StdEncoding.EncodeToString(x509.MarshalPKCS1PublicKey(&rsaKey.PublicKey))
	cases := []struct {
		name, record string
		want         string // "" = match
	}{
		{"same", good, ""},
		{"folded p= and no k=", strings.Replace(strings.Replace(good, "k=rsa; ", "", 1), "p=", "p= ", 1), ""},
		{"RSAPublicKey form (erratum 3017)", pkcs1, ""},
		{"other key", other, "different public key"},
		{"other type", ed, "k=ed25519"},
		{"revoked", "v=DKIM1; k=rsa; p=", "revokes"},
		{"version", "v=DKIM2; p=AAAA", "v=DKIM2"},
		{"no p", "v=DKIM1; k=rsa", "no p="},
		{"garbage", "hello", "malformed"},
	}
	for _, tc := range cases {
		err := MatchRecord(tc.record, rsaKey)
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}
