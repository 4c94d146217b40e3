package config

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// typeErr reports a bad scalar as a yaml.TypeError so that the decoder
// records it with its line and goes on to find the other problems.
func typeErr(n *yaml.Node, format string, args ...any) error {
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: ", n.Line) + fmt.Sprintf(format, args...)}}
}

// Duration is a time.Duration written in YAML as a Go duration string ("90s", "48h").
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// UnmarshalYAML accepts Go duration strings; "0" and "" mean zero.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return typeErr(n, "expected a duration such as 90s or 48h")
	}
	s := strings.TrimSpace(n.Value)
	if s == "" || s == "0" {
		*d = 0
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		if hint := durationHint(s); hint != "" {
			return typeErr(n, "bad duration %q; did you mean %q? (Go durations such as 90s, 5m, 48h)", n.Value, hint)
		}
		return typeErr(n, "bad duration %q (use Go durations such as 90s, 5m, 48h)", n.Value)
	}
	if v < 0 {
		return typeErr(n, "bad duration %q: must not be negative", n.Value)
	}
	*d = Duration(v)
	return nil
}

var spelledDuration = regexp.MustCompile(`^(\d+)\s*([A-Za-z]*)$`)

// durationHint rewrites a spelt-out duration ("5 minutes", "2days", "1 week")
// as a Go duration, or returns "".
func durationHint(s string) string {
	m := spelledDuration.FindStringSubmatch(s)
	if m == nil {
		return ""
	}
	n, err := strconv.Atoi(m[1])
	if err != nil {
		return ""
	}
	unit := strings.TrimSuffix(strings.ToLower(m[2]), "s")
	switch unit {
	case "", "sec", "second":
		return fmt.Sprintf("%ds", n)
	case "min", "minute":
		return fmt.Sprintf("%dm", n)
	case "hr", "hour":
		return fmt.Sprintf("%dh", n)
	case "d", "day":
		return fmt.Sprintf("%dh", n*24)
	case "w", "week":
		return fmt.Sprintf("%dh", n*24*7)
	}
	return ""
}

// MarshalYAML writes the duration back as a string without zero units
// ("48h", "1h30m", "5m").
func (d Duration) MarshalYAML() (any, error) {
	s := time.Duration(d).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s, nil
}

// Durations is a list of durations. A bad entry is reported and kept as 0,
// so the entries after it keep their indexes (and lines) in the problems.
type Durations []Duration

// UnmarshalYAML decodes every entry and reports all the bad ones.
func (ds *Durations) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.SequenceNode {
		return typeErr(n, "expected a list of durations such as [1m, 5m, 1h]")
	}
	out := make(Durations, len(n.Content))
	var bad []string
	for i, c := range n.Content {
		for c.Kind == yaml.AliasNode && c.Alias != nil {
			c = c.Alias
		}
		if err := out[i].UnmarshalYAML(c); err != nil {
			te, ok := err.(*yaml.TypeError)
			if !ok {
				return err
			}
			bad = append(bad, te.Errors...)
		}
	}
	*ds = out
	if len(bad) > 0 {
		return &yaml.TypeError{Errors: bad}
	}
	return nil
}

// Size is a byte count written as a number or with a unit: 25MiB, 512KiB, 10MB, 1GiB.
type Size int64

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
	{"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1},
}

// ParseSize parses "25MiB", "4096" or "10MB".
func ParseSize(s string) (Size, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	num := s
	for _, u := range sizeUnits {
		if strings.HasSuffix(s, u.suffix) {
			mult = u.mult
			num = strings.TrimSpace(strings.TrimSuffix(s, u.suffix))
			break
		}
	}
	v, err := strconv.ParseInt(num, 10, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("bad size %q (use bytes or a unit: 512KiB, 25MiB, 1GiB)", s)
	}
	return Size(v * mult), nil
}

// MarshalYAML writes the size with the largest binary unit that divides it
// (25MiB), or as a plain number of bytes.
func (s Size) MarshalYAML() (any, error) {
	for _, u := range []struct {
		suffix string
		mult   Size
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if s != 0 && s%u.mult == 0 {
			return fmt.Sprintf("%d%s", s/u.mult, u.suffix), nil
		}
	}
	return int64(s), nil
}

// UnmarshalYAML accepts sizes as numbers or strings with units.
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return typeErr(n, "expected a size such as 25MiB")
	}
	v, err := ParseSize(n.Value)
	if err != nil {
		return typeErr(n, "%v", err)
	}
	*s = v
	return nil
}

// Rate is a message rate such as 600/m; zero Count means unlimited.
type Rate struct {
	Count  int
	Per    time.Duration
	Source string
}

// ParseRate parses "600/m", "10/s", "1000/h", "50000/d"; "" is unlimited.
func ParseRate(s string) (Rate, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Rate{}, nil
	}
	num, unit, ok := strings.Cut(s, "/")
	if !ok {
		return Rate{}, fmt.Errorf("bad rate %q (use N/s, N/m, N/h or N/d)", s)
	}
	n, err := strconv.Atoi(strings.TrimSpace(num))
	if err != nil || n <= 0 {
		return Rate{}, fmt.Errorf("bad rate %q: count must be a positive integer", s)
	}
	unit = strings.TrimSpace(unit)
	per := rateUnits[unit]
	if per == 0 {
		if u := rateUnitFor(unit); u != "" {
			return Rate{}, fmt.Errorf("bad rate %q: unit must be s, m, h or d; did you mean \"%d/%s\"?", s, n, u)
		}
		return Rate{}, fmt.Errorf("bad rate %q: unit must be s, m, h or d", s)
	}
	return Rate{Count: n, Per: per, Source: s}, nil
}

// rateUnits are the units of a rate.
var rateUnits = map[string]time.Duration{"s": time.Second, "m": time.Minute, "h": time.Hour, "d": 24 * time.Hour}

// rateUnitFor maps a spelt-out unit ("minute", "sec", "hours") to its letter.
func rateUnitFor(unit string) string {
	u := strings.TrimSuffix(strings.ToLower(unit), "s")
	for _, w := range []struct{ letter, names string }{
		{"s", " sec second "}, {"m", " min minute "}, {"h", " hr hour "}, {"d", " day "},
	} {
		if u != "" && strings.Contains(w.names, " "+u+" ") {
			return w.letter
		}
	}
	return ""
}

// UnmarshalYAML parses the rate string.
func (r *Rate) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return typeErr(n, "expected a rate such as 600/m")
	}
	v, err := ParseRate(n.Value)
	if err != nil {
		return typeErr(n, "%v", err)
	}
	*r = v
	return nil
}

// MarshalYAML writes the rate as it is written in the file ("" = unlimited).
func (r Rate) MarshalYAML() (any, error) {
	if r.Unlimited() {
		return "", nil
	}
	if r.Source != "" {
		return r.Source, nil
	}
	unit := map[time.Duration]string{time.Second: "s", time.Minute: "m", time.Hour: "h", 24 * time.Hour: "d"}[r.Per]
	return fmt.Sprintf("%d/%s", r.Count, unit), nil
}

// Unlimited reports whether no rate applies.
func (r Rate) Unlimited() bool { return r.Count == 0 }
