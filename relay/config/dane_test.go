package config

import (
	"strings"
	"testing"
)

// delivery.dns.dnssec and delivery.dane: defaults (off, enabled, no
// warning), an unquoted `off`, a bad value, and the warnings of `check`.
func TestDANEConfig(t *testing.T) {
	cases := []struct {
		name, delivery string
		trustAD, dane  bool
		problem, warn  string // substrings; "" = none
	}{
		{name: "default", dane: true},
		{name: "off unquoted", delivery: "  dns: {dnssec: off}\n", dane: true},
		{name: "loopback", delivery: "  dns: {dnssec: trust_ad, servers: [\"127.0.0.1:53\", \"::1\"]}\n",
			trustAD: true, dane: true},
		{name: "typo", delivery: "  dns: {dnssec: trust-ad}\n", problem: "delivery.dns.dnssec", dane: true},
		{name: "remote", delivery: "  dns: {dnssec: trust_ad, servers: [\"127.0.0.1\", \"192.0.2.53:53\"]}\n",
			trustAD: true, dane: true, warn: "192.0.2.53:53"},
		{name: "resolv.conf", delivery: "  dns: {dnssec: trust_ad}\n", trustAD: true, dane: true, warn: "resolv.conf"},
		{name: "dane without dnssec", delivery: "  dane: {enabled: true}\n", dane: true, warn: "delivery.dane.enabled"},
		{name: "dane off", delivery: "  dane: {enabled: false}\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse([]byte("hostname: relay.example.com\ndelivery:\n  port: 25\n" + tc.delivery))
			if tc.problem != "" {
				if err == nil || !strings.Contains(err.Error(), tc.problem) {
					t.Fatalf("error %v, want one naming %s", err, tc.problem)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Delivery.DNS.TrustAD() != tc.trustAD || cfg.Delivery.DANE.Enabled != tc.dane {
				t.Fatalf("dns %+v dane %+v", cfg.Delivery.DNS, cfg.Delivery.DANE)
			}
			var got []string
			for _, w := range cfg.Warnings() {
				if strings.HasPrefix(w.Path, "delivery.d") {
					got = append(got, w.Path+" "+w.Msg)
				}
			}
			if tc.warn == "" && len(got) != 0 || tc.warn != "" && (len(got) != 1 || !strings.Contains(got[0], tc.warn)) {
				t.Fatalf("warnings %q, want one with %q", got, tc.warn)
			}
		})
	}
}
