package dnsname

import (
	"errors"
	"strings"
	"testing"
)

func TestToASCII(t *testing.T) {
	long63 := strings.Repeat("a", 63)
	name253 := strings.Join([]string{long63, long63, long63, strings.Repeat("b", 61)}, ".")
	for _, tc := range []struct{ in, want, err string }{
		{in: "example.com", want: "example.com"},
		{in: "EXAMPLE.Com", want: "example.com"},
		{in: "example.com.", want: "example.com"},
		{in: "bücher.example", want: "xn--bcher-kva.example"},
		{in: "BÜCHER.example", want: "xn--bcher-kva.example"},
		{in: "xn--bcher-kva.example", want: "xn--bcher-kva.example"},
		{in: "XN--BCHER-KVA.EXAMPLE.", want: "xn--bcher-kva.example"},
		{in: "faß.de", want: "xn--fa-hia.de"},
		{in: "例え.テスト", want: "xn--r8jz45g.xn--zckzah"},
		{in: "mail-1.example", want: "mail-1.example"},
		{in: name253, want: name253},
		{in: name253 + ".", want: name253},
		{in: "", err: "empty"},
		{in: ".", err: "empty"},
		{in: "a..b", err: "invalid"},
		{in: "😀.example", want: "xn--e28h.example"}, // UTS #46 allows emoji, as browsers do
		{in: "nul\x00.example", err: "invalid"},
		{in: "esc\x1b[2J.example", err: "invalid"},
		{in: "bad\ufffd.example", err: "invalid"},
		{in: "a/b.example", err: "invalid"},
		{in: "under_score.example", err: "invalid"},
		{in: "xn--zz.example", err: "invalid"},
		{in: "-lead.example", err: "invalid"},
		{in: "[192.0.2.1]", err: "address literal"},
		{in: "0\xae.example", err: "not valid UTF-8"},
		{in: "a b.example", err: "invalid"},
		{in: name253 + "c", err: "longer than 253"},
		{in: strings.Repeat("a", 64) + ".example", err: "longer than 63"},
		{in: strings.Repeat("ü", 60) + ".example", err: "longer than 63"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ToASCII(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ToASCII(%q) = %q, %v; want error containing %q", tc.in, got, err, tc.err)
				}
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("error %v is not ErrInvalid", err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ToASCII(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
}

func FuzzToASCII(f *testing.F) {
	for _, s := range []string{"example.com", "bücher.example.", "XN--BCHER-KVA.example", "a..b", "[1.2.3.4]", "😀.x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ToASCII(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v is not ErrInvalid", err)
			}
			return
		}
		if len(a) == 0 || len(a) > MaxName || a != strings.ToLower(a) || strings.HasSuffix(a, ".") {
			t.Fatalf("ToASCII(%q) = %q", s, a)
		}
		for i := 0; i < len(a); i++ {
			if a[i] >= 0x80 || a[i] <= ' ' {
				t.Fatalf("ToASCII(%q) = %q: not printable ASCII", s, a)
			}
		}
		if again, err := ToASCII(a); err != nil || again != a {
			t.Fatalf("not idempotent: %q -> %q -> %q, %v", s, a, again, err)
		}
	})
}
