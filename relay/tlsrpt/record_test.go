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
