package mtasts

import (
	"errors"
	"testing"

	"github.com/jetrelay/jetrelay/relay/smtpclient"
)

func TestParseRecord(t *testing.T) {
	for txt, want := range map[string]string{
		"v=STSv1; id=20160831085700Z;": "20160831085700Z",
		"v=STSv1;id=abc":               "abc",
		"v=STSv1; id=abc; ext=x":       "abc",
	} {
		if id, err := ParseRecord(txt); err != nil || id != want {
			t.Errorf("ParseRecord(%q) = %q, %v; want %q", txt, id, err, want)
		}
	}
	for _, txt := range []string{"v=STSv2; id=1", "v=STSv1;", "v=STSv1; id=a-b", "v=STSv1; id=" +
		"123456789012345678901234567890123", "v=STSv1; junk"} {
		if _, err := ParseRecord(txt); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseRecord(%q): %v, want ErrInvalid", txt, err)
		}
	}
}

func TestParsePolicy(t *testing.T) {
	p, err := ParsePolicy([]byte("version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 604800\r\nfoo: bar\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if p.Mode != smtpclient.STSEnforce || len(p.MX) != 2 || p.MaxAge != 604800 {
		t.Fatalf("policy %+v", p)
	}
	if _, err := ParsePolicy([]byte("version: STSv1\nmode: none\nmax_age: 86400\n")); err != nil {
		t.Fatalf("mode none without mx: %v", err)
	}
	for _, bad := range []string{
		"mode: enforce\nmx: a.example\nmax_age: 1\n",                // no version
		"version: STSv1\nmode: enforce\nmax_age: 1\n",               // no mx
		"version: STSv1\nmode: strict\nmx: a.example\nmax_age: 1\n", // bad mode
		"version: STSv1\nmode: testing\nmx: a.example\nmax_age: 31557601\n",
		"version: STSv1\nmode: testing\nmx: a.example\nmax_age: -1\n",
		"version: STSv1\nmode: testing\nmx: a.*.example\nmax_age: 1\n", // wildcard not leading
		"version: STSv1\nmode: testing\nmx: a.example\n",               // no max_age
		"version: STSv1\ngarbage\n",
	} {
		if _, err := ParsePolicy([]byte(bad)); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParsePolicy(%q): %v, want ErrInvalid", bad, err)
		}
	}
}

func TestMatchMX(t *testing.T) {
	p := &smtpclient.STSPolicy{MX: []string{"mail.example.com", "*.example.net"}}
	for host, want := range map[string]bool{
		"mail.example.com": true, "MAIL.example.com.": true, "x.example.com": false,
		"a.example.net": true, "a.b.example.net": false, "example.net": false,
	} {
		if got := p.Matches(host); got != want {
			t.Errorf("Matches(%q) = %v, want %v", host, got, want)
		}
	}
}

func FuzzParsePolicy(f *testing.F) {
	f.Add([]byte("version: STSv1\nmode: enforce\nmx: mail.example.com\nmax_age: 86400\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParsePolicy(b)
		if err == nil && (p.MaxAge < 0 || p.MaxAge > MaxMaxAge) {
			t.Fatalf("accepted max_age %d", p.MaxAge)
		}
	})
}
