package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// BounceGuard pauses a user whose mail bounces or is complained about too
// often, counted across every node over Window (relay/stats, relay/guard):
// the bounce rate is hard bounces / (delivered + hard bounces), the
// complaint rate complaints / delivered, in recipients. Past a warn
// threshold a bounce_rate_warning event is published once; past a pause
// threshold the user's MAIL gets 451 4.7.1 until `jetrelay user resume`.
// A threshold left out (or 0) is not checked; a block with none
// (bounce_guard: {}) turns the guard off for that user.
type BounceGuard struct {
	Warn           Percent `yaml:"warn"`            // bounce rate that warns, e.g. 5%
	Pause          Percent `yaml:"pause"`           // bounce rate that pauses, e.g. 10%
	ComplaintWarn  Percent `yaml:"complaint_warn"`  // complaint rate that warns, e.g. 0.1%
	ComplaintPause Percent `yaml:"complaint_pause"` // complaint rate that pauses, e.g. 0.5%
	// Window is the span the rates are counted over (10m to 168h; 0 = 24h).
	Window Duration `yaml:"window"`
	// MinVolume: no warning or pause before the window holds this many
	// delivered plus bounced recipients (0 = 200).
	MinVolume int `yaml:"min_volume"`
}

// Guard defaults and bounds.
const (
	DefaultGuardWindow    = 24 * time.Hour
	DefaultGuardMinVolume = 200
	minGuardWindow        = 10 * time.Minute
	maxGuardWindow        = 7 * 24 * time.Hour // the counts are kept 8 days
)

// Enabled reports whether any threshold is set.
func (g BounceGuard) Enabled() bool {
	return g.Warn.Frac > 0 || g.Pause.Frac > 0 || g.ComplaintWarn.Frac > 0 || g.ComplaintPause.Frac > 0
}

// GuardOf is the bounce guard in force for u: its own bounce_guard, else
// submission.bounce_guard, with window and min_volume defaulted; nil when
// none is set or it has no threshold.
func (c *Config) GuardOf(u User) *BounceGuard {
	g := u.BounceGuard
	if g == nil {
		g = c.Submission.BounceGuard
	}
	if g == nil || !g.Enabled() {
		return nil
	}
	out := *g
	if out.Window == 0 {
		out.Window = Duration(DefaultGuardWindow)
	}
	if out.MinVolume == 0 {
		out.MinVolume = DefaultGuardMinVolume
	}
	return &out
}

// validateGuards checks submission.bounce_guard and every user's.
func (c *Config) validateGuards(ps *problems) {
	validateGuard(ps, "submission.bounce_guard", c.Submission.BounceGuard)
	for i, u := range c.Submission.Users {
		validateGuard(ps, fmt.Sprintf("submission.users[%d].bounce_guard", i), u.BounceGuard)
	}
}

func validateGuard(ps *problems, p string, g *BounceGuard) {
	if g == nil {
		return
	}
	if w := g.Window.D(); w != 0 && (w < minGuardWindow || w > maxGuardWindow) {
		ps.add(p+".window", "must be between 10m and 168h (the counts are kept 8 days)")
	}
	if g.MinVolume < 0 {
		ps.add(p+".min_volume", "must not be negative")
	}
	for _, pair := range []struct {
		warn, pause       Percent
		warnKey, pauseKey string
	}{{g.Warn, g.Pause, "warn", "pause"}, {g.ComplaintWarn, g.ComplaintPause, "complaint_warn", "complaint_pause"}} {
		if pair.warn.Frac > 0 && pair.pause.Frac > 0 && pair.warn.Frac >= pair.pause.Frac {
			ps.add(p+"."+pair.warnKey, "%s must be below %s (%s)", pair.warn, pair.pauseKey, pair.pause)
		}
	}
}

// Percent is a share written as a percentage: "5%", "0.1%".
type Percent struct {
	Frac   float64 // 0.05 for 5%
	Source string
}

// ParsePercent parses "5%" or "0.1%" (0 < p <= 100); "" and "0" are 0.
func ParsePercent(s string) (Percent, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "0" {
		return Percent{}, nil
	}
	num, ok := strings.CutSuffix(s, "%")
	if !ok {
		return Percent{}, fmt.Errorf("bad percentage %q: write it with %%, e.g. 5%% or 0.1%%", s)
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if err != nil || !(v > 0 && v <= 100) { // NaN too
		return Percent{}, fmt.Errorf("bad percentage %q: must be above 0%% and at most 100%%", s)
	}
	return Percent{Frac: v / 100, Source: s}, nil
}

// String writes the percentage as in the file.
func (p Percent) String() string {
	if p.Source != "" {
		return p.Source
	}
	return strconv.FormatFloat(p.Frac*100, 'f', -1, 64) + "%"
}

// UnmarshalYAML parses the percentage.
func (p *Percent) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return typeErr(n, "expected a percentage such as 5%%")
	}
	v, err := ParsePercent(n.Value)
	if err != nil {
		return typeErr(n, "%v", err)
	}
	*p = v
	return nil
}

// MarshalYAML writes the percentage as in the file.
func (p Percent) MarshalYAML() (any, error) {
	if p.Frac == 0 {
		return "", nil
	}
	return p.String(), nil
}
