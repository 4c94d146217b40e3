package config

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Shaping limits delivery per mailbox provider (delivery.shaping). A
// destination belongs to the first provider one of whose mx entries matches
// one of its MX hosts; destinations of no provider get Default, per node and
// per destination. Provider limits hold across every node of a cluster.
type Shaping struct {
	// Default applies to each destination that matches no provider, per
	// node; its connections is delivery.max_per_destination (an alias: the
	// file may set either, and both hold the value after Load).
	Default ShapingLimits `yaml:"default"`
	// Providers are matched in order, first match wins; the included file's
	// providers come after these (an entry here replaces an included one
	// of the same name).
	Providers []Provider `yaml:"providers"`
	// Rules act on what providers answer: threshold matching replies within
	// the window suspend the provider or lower its rate for a while.
	Rules []ShapingRule `yaml:"rules"`
	// Include names a YAML file of further providers and rules (top-level
	// keys providers and rules), relative to this config file, such as the
	// shipped configs/shaping.yaml; "" = none.
	Include string `yaml:"include"`
	// BackoffFor is how long the builtin backoff halves a provider's rate
	// after a throttling reply no rule matched (421 at greeting, 4.7.28,
	// 4.7.650, 4.7.0/4.7.1 saying rate, too many or throttled).
	BackoffFor Duration `yaml:"backoff_for"`

	// Included are the providers and rules read from Include.
	Included ShapingFile `yaml:"-"`
}

// ShapingLimits are the limits of destinations that match no provider.
type ShapingLimits struct {
	Connections    int  `yaml:"connections"`     // concurrent connections per destination and node
	Rate           Rate `yaml:"rate"`            // messages (N/s, N/m, N/h, N/d); "" = unlimited
	PerConnection  int  `yaml:"per_connection"`  // messages on one connection, then QUIT; 0 = unlimited
	ConnectionRate Rate `yaml:"connection_rate"` // new connections; "" = unlimited
}

// Provider is one mailbox provider: the MX hosts that identify it and its
// limits, counted across every node of a cluster.
type Provider struct {
	Name string `yaml:"name"`
	// MX entries: ".google.com" matches any host under google.com, a name
	// without a leading dot only that host.
	MX             []string `yaml:"mx"`
	Connections    int      `yaml:"connections"`     // concurrent connections; 0 = unlimited
	Rate           Rate     `yaml:"rate"`            // messages; "" = unlimited
	PerConnection  int      `yaml:"per_connection"`  // messages on one connection, then QUIT; 0 = unlimited
	ConnectionRate Rate     `yaml:"connection_rate"` // new connections; "" = unlimited
	// PerSource applies each limit per egress source instead of in total.
	PerSource bool `yaml:"per_source"`
}

// ShapingRule is an adaptive rule on the replies of providers.
type ShapingRule struct {
	Name      string   `yaml:"name"`      // for logs and events; "" = "rule N"
	Providers []string `yaml:"providers"` // provider names, or ["*"] for all
	// Reply is a regular expression (case-insensitive) matched against
	// "<code> <enhanced code> <text>" of each reply, e.g. "4\\.7\\.28|unusual rate".
	Reply string `yaml:"reply"`
	// Threshold is "N/window": N matching replies within the window (a Go
	// duration, or s, m, h, d for one of them) trigger the action.
	Threshold Threshold     `yaml:"threshold"`
	Action    ShapingAction `yaml:"action"`
}

// ShapingAction is what a rule does: suspend the provider, or lower its
// rate for a while.
type ShapingAction struct {
	Suspend Duration `yaml:"suspend"` // no new connections for this long
	Rate    Rate     `yaml:"rate"`    // or this rate ...
	For     Duration `yaml:"for"`     // ... for this long
}

// ShapingFile is the content of delivery.shaping.include.
type ShapingFile struct {
	Providers []Provider    `yaml:"providers"`
	Rules     []ShapingRule `yaml:"rules"`
}

// Threshold is a count within a window, written "3/10m".
type Threshold struct {
	Count  int
	Window time.Duration
}

// ParseThreshold parses "3/10m", "5/1h" or "3/m"; "" is none.
func ParseThreshold(s string) (Threshold, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Threshold{}, nil
	}
	num, win, ok := strings.Cut(s, "/")
	n, err := strconv.Atoi(strings.TrimSpace(num))
	if !ok || err != nil || n <= 0 {
		return Threshold{}, fmt.Errorf("bad threshold %q (use N/window such as 3/10m)", s)
	}
	win = strings.TrimSpace(win)
	d, ok := rateUnits[win]
	if !ok {
		d, err = time.ParseDuration(win)
		if err != nil || d <= 0 {
			return Threshold{}, fmt.Errorf("bad threshold %q: the window must be a positive duration such as 10m", s)
		}
	}
	return Threshold{Count: n, Window: d}, nil
}

// UnmarshalYAML parses the threshold string.
func (t *Threshold) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return typeErr(n, "expected a threshold such as 3/10m")
	}
	v, err := ParseThreshold(n.Value)
	if err != nil {
		return typeErr(n, "%v", err)
	}
	*t = v
	return nil
}

// MarshalYAML writes the threshold as "N/window".
func (t Threshold) MarshalYAML() (any, error) {
	if t.Count == 0 {
		return "", nil
	}
	w, _ := Duration(t.Window).MarshalYAML()
	return fmt.Sprintf("%d/%s", t.Count, w), nil
}

// ReplyPattern compiles a rule's reply expression as the relay matches it:
// case-insensitive.
func ReplyPattern(expr string) (*regexp.Regexp, error) {
	return regexp.Compile("(?i)" + expr)
}

// AllProviders returns the configured providers followed by the included
// ones whose names the configuration does not use (first match wins, so an
// operator's entry comes first and replaces an included one).
func (s Shaping) AllProviders() []Provider {
	own := map[string]bool{}
	out := make([]Provider, 0, len(s.Providers)+len(s.Included.Providers))
	for _, p := range s.Providers {
		own[p.Name] = true
		out = append(out, p)
	}
	for _, p := range s.Included.Providers {
		if !own[p.Name] {
			out = append(out, p)
		}
	}
	return out
}

// AllRules returns the configured rules followed by the included ones.
func (s Shaping) AllRules() []ShapingRule {
	return append(append([]ShapingRule(nil), s.Rules...), s.Included.Rules...)
}

// Source is one egress address: connections through it bind Address as
// their local address and say EHLO as their name.
type Source struct {
	Name    string `yaml:"name"`
	Address string `yaml:"address"` // an IP address of this host
	EHLO    string `yaml:"ehlo"`    // "" = hostname
}
