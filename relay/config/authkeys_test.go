package config

import (
	"strings"
	"testing"
	"time"
)

// TestAuthBrakeAndPreAuthKeys: defaults of the auth brake, trusted
// networks, pre-auth timeouts and received_user; parsing; every problem
// reported at once.
func TestAuthBrakeAndPreAuthKeys(t *testing.T) {
	d := Default().Submission
	if d.AuthFailures.Max != 10 || d.AuthFailures.MaxPerUser != 5 || len(d.TrustedNetworks) != 0 || d.ReceivedUser ||
		d.Timeouts.PreAuth.Idle.D() != time.Minute || d.Timeouts.PreAuth.Session.D() != 3*time.Minute {
		t.Fatalf("defaults: %+v", d)
	}
	c, err := Parse([]byte("submission:\n  trusted_networks: [10.0.0.0/8, \"2001:db8::1\"]\n  received_user: true\n" +
		"  auth_failures: {max_per_user: 3}\n  timeouts: {pre_auth: {idle: 10s}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	s := c.Submission
	if !s.ReceivedUser || s.AuthFailures.MaxPerUser != 3 || s.AuthFailures.Max != 10 ||
		s.Timeouts.PreAuth.Idle.D() != 10*time.Second ||
		s.Timeouts.PreAuth.Session.D() != 3*time.Minute || len(s.TrustedNetworks) != 2 {
		t.Fatalf("parsed: %+v", s)
	}
	if p, err := ParseNetwork("2001:db8::1"); err != nil || p.Bits() != 128 {
		t.Fatalf("single address: %v %v", p, err)
	}
	_, err = Parse([]byte("submission:\n  trusted_networks: [10.0.0.0/33, nonsense]\n" +
		"  auth_failures: {max: -1, max_per_user: -2}\n" +
		"  timeouts: {pre_auth: {idle: 0s}}\n"))
	for _, w := range []string{"submission.trusted_networks[0]", "submission.trusted_networks[1]",
		"submission.auth_failures.max:",
		"submission.auth_failures.max_per_user", "submission.timeouts.pre_auth.idle"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("error %v\ndoes not mention %s", err, w)
		}
	}
}
