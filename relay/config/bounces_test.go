package config

import (
	"strings"
	"testing"
)

// TestBouncesIntakeValidation: bounces.verp_max_age and bounces.intake
// problems are all reported, each with its line.
func TestBouncesIntakeValidation(t *testing.T) {
	yaml := "hostname: x\nbounces:\n  verp_max_age: 1000h\n  intake:\n    max_connections: 0\n" +
		"    max_connections_per_ip: 5\n    idle: 0s\n    session: 0s\n"
	_, err := Parse([]byte(yaml))
	if err == nil {
		t.Fatal("no error")
	}
	for _, w := range []string{
		`line 3: bounces.verp_max_age: must be between 1h and 720h0m0s`,
		`line 5: bounces.intake.max_connections: must be at least 1`,
		`line 6: bounces.intake.max_connections_per_ip: must be between 1 and bounces.intake.max_connections`,
		`line 7: bounces.intake.idle: must be positive`,
	} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q\ndoes not contain %q", err, w)
		}
	}
	c := Default()
	in := c.Bounces.Intake
	if in.MaxConnections != 100 || in.MaxConnectionsPerIP != 10 || in.Idle.D().String() != "1m0s" ||
		in.Session.D().String() != "10m0s" || c.Bounces.VERPMaxAge.D().String() != "336h0m0s" {
		t.Errorf("defaults %+v, verp_max_age %v", in, c.Bounces.VERPMaxAge.D())
	}
}
