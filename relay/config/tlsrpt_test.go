package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// delivery.tls_rpt: enabled by default with from tlsrpt@<hostname>; a
// from set in the file needs a DKIM signing key for its domain (RFC 8460
// §5.3: reports by mail are DKIM-signed), a parent's key counting with
// dkim.parent_domains; the default from only warns, and only when the
// relay signs for other domains.
func TestTLSRPTConfig(t *testing.T) {
	key := filepath.Join(t.TempDir(), "k.pem")
	if err := os.WriteFile(key, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	keys := func(dom string, extra string) string {
		return "dkim:\n  keys: [{domain: " + dom + ", selector: s1, key: " + key + "}]\n" + extra
	}
	cases := []struct {
		name, delivery, dkim string
		from, problem, warn  string // substrings; "" = none
	}{
		{name: "default", from: "tlsrpt@relay.example.com"},
		{name: "default, other domain signed", dkim: keys("example.net", ""), from: "tlsrpt@relay.example.com",
			warn: "delivery.tls_rpt.from"},
		{name: "default, hostname signed", dkim: keys("relay.example.com", ""), from: "tlsrpt@relay.example.com"},
		{name: "from without key", delivery: "  tls_rpt: {from: tls@example.com}\n", problem: "no dkim.keys entry signs for example.com"},
		{name: "from with key", delivery: "  tls_rpt: {from: tls@example.com, org_name: Ex}\n", dkim: keys("example.com", ""),
			from: "tls@example.com"},
		{name: "from with parent key", delivery: "  tls_rpt: {from: tls@mail.example.com}\n",
			dkim: keys("example.com", "  parent_domains: true\n"), from: "tls@mail.example.com"},
		{name: "parent key without parent_domains", delivery: "  tls_rpt: {from: tls@mail.example.com}\n",
			dkim: keys("example.com", ""), problem: "mail.example.com"},
		{name: "disabled", delivery: "  tls_rpt: {enabled: false, from: tls@example.com}\n", from: "tls@example.com"},
		{name: "not an address", delivery: "  tls_rpt: {from: nobody}\n", problem: "delivery.tls_rpt.from"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse([]byte("hostname: relay.example.com\ndelivery:\n  port: 25\n" + tc.delivery + tc.dkim))
			if tc.problem != "" {
				if err == nil || !strings.Contains(err.Error(), tc.problem) {
					t.Fatalf("error %v, want one naming %s", err, tc.problem)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if enabled := !strings.Contains(tc.delivery, "enabled: false"); cfg.Delivery.TLSRPT.Enabled != enabled {
				t.Fatalf("enabled %v, want %v", cfg.Delivery.TLSRPT.Enabled, enabled)
			}
			if got := cfg.TLSRPTFrom(); got != tc.from {
				t.Fatalf("from %q, want %q", got, tc.from)
			}
			var warns []string
			for _, w := range cfg.Warnings() {
				warns = append(warns, w.Error())
			}
			if got := strings.Join(warns, "\n"); tc.warn == "" && got != "" || !strings.Contains(got, tc.warn) {
				t.Fatalf("warnings %q, want %q", got, tc.warn)
			}
		})
	}
}
