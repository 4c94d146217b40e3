package config

import (
	"strings"
	"testing"
)

// TestFBLAddressValidation: bounces.fbl_address must be an address and
// needs the intake; a good one with the intake passes.
func TestFBLAddressValidation(t *testing.T) {
	bad := "hostname: x\nbounces:\n  fbl_address: \"not an address\"\n"
	_, err := Parse([]byte(bad))
	for _, w := range []string{
		`line 3: bounces.fbl_address: "not an address" is not an address (local@domain)`,
		`line 3: bounces.fbl_address: needs bounces.listen`,
	} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("error %v\ndoes not contain %q", err, w)
		}
	}
	good := "hostname: x\nbounces:\n  verp_domain: b.example.com\n  listen: \"127.0.0.1:2525\"\n" +
		"  fbl_address: fbl@b.example.com\n"
	c, err := Parse([]byte(good))
	if err != nil {
		t.Fatalf("good config: %v", err)
	}
	if c.Bounces.FBLAddress != "fbl@b.example.com" {
		t.Errorf("fbl_address = %q", c.Bounces.FBLAddress)
	}
	if Default().Bounces.FBLAddress != "" {
		t.Error("fbl_address has a default")
	}
}
