package tlsrpt_test

import (
	"strings"
	"testing"

	"github.com/jetrelay/jetrelay/relay/tlsrpt"
)

// RFC 8460 §3 records: v=TLSRPTv1 first, rua a comma-separated list of
// mailto: and https: URIs; other schemes and fields are ignored.
func TestParseRecord(t *testing.T) {
	cases := []struct {
		txt, mailto, https string // "" https and mailto with err: no record
		bad                bool
	}{
		{txt: "v=TLSRPTv1; rua=mailto:tls@example.com", mailto: "tls@example.com"},
		{txt: "v=TLSRPTv1;rua=mailto:a@x.test,https://r.x.test/v1", mailto: "a@x.test", https: "https://r.x.test/v1"},
		{txt: "v=TLSRPTv1; rua=mailto:tls%2Breports@x.test", mailto: "tls+reports@x.test"},
		{txt: "v=TLSRPTv1; foo=bar; rua=http://insecure.test/, mailto:r@x.test", mailto: "r@x.test"},
		{txt: "v=TLSRPTv1; rua=mailto:r@x.test?subject=hi", mailto: "r@x.test"},
		{txt: "v=TLSRPTv1; rua=ftp://x.test/", bad: true},
		{txt: "v=TLSRPTv1;", bad: true},
		{txt: "v=STSv1; rua=mailto:r@x.test", bad: true},
		{txt: "rua=mailto:r@x.test; v=TLSRPTv1", bad: true},
		{txt: "v=TLSRPTv1; rua=mailto:no-at-sign", bad: true},
	}
	for _, c := range cases {
		ep, err := tlsrpt.ParseRecord(c.txt)
		if c.bad {
			if err == nil {
				t.Errorf("%q: parsed as %+v, want no record", c.txt, ep)
			}
			continue
		}
		if err != nil || strings.Join(ep.Mailto, ",") != c.mailto || strings.Join(ep.HTTPS, ",") != c.https {
			t.Errorf("%q: %+v %v; want mailto %q https %q", c.txt, ep, err, c.mailto, c.https)
		}
	}
}

// FuzzParseRecord: any TXT record parses or is refused, never panics,
// and what it returns is bounded and well-formed.
func FuzzParseRecord(f *testing.F) {
	for _, s := range []string{"v=TLSRPTv1; rua=mailto:tls@example.com", "v=TLSRPTv1;rua=https://r.test/x,mailto:a@b.test",
		"v=TLSRPTv1; rua=mailto:%zz@x.test", "v=TLSRPTv1; rua=", "v=TLSRPTv1; rua=mailto:a@b.test?x=y;ext=1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, txt string) {
		ep, err := tlsrpt.ParseRecord(txt)
		if err != nil {
			return
		}
		if n := len(ep.Mailto) + len(ep.HTTPS); n == 0 || n > 10 {
			t.Fatalf("%q: %d endpoints", txt, n)
		}
		for _, a := range ep.Mailto {
			if !strings.Contains(a, "@") || strings.ContainsAny(a, " <>,\r\n") {
				t.Fatalf("%q: bad address %q", txt, a)
			}
		}
		for _, u := range ep.HTTPS {
			if !strings.HasPrefix(strings.ToLower(u), "https://") {
				t.Fatalf("%q: bad URL %q", txt, u)
			}
		}
	})
}
