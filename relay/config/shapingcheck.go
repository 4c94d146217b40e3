package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// shapingPath is the YAML path of the shaping section.
const shapingPath = "delivery.shaping"

var (
	providerName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
	mxPattern    = regexp.MustCompile(`(?i)^\.?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*\.?$`)
)

// resolveInclude makes delivery.shaping.include relative to the config
// file's directory (dir), falling back to the working directory when only
// that has the file.
func (s *Shaping) resolveInclude(dir string) {
	p := s.Include
	if p == "" || filepath.IsAbs(p) {
		return
	}
	cand := filepath.Join(dir, p)
	if !fileExists(cand) && fileExists(p) {
		return
	}
	s.Include = cand
}

// loadInclude reads delivery.shaping.include into Included: strictly (an
// unknown key is a problem), reporting every problem with the file's name.
func (c *Config) loadInclude() error {
	s := &c.Delivery.Shaping
	s.Included = ShapingFile{}
	if s.Include == "" {
		return nil
	}
	data, err := readInclude(s.Include)
	if err != nil {
		return Problem{Path: shapingPath + ".include", Line: c.Line("delivery", "shaping", "include"),
			Msg: fmt.Sprintf("cannot read %s: %v", s.Include, unwrapPathErr(err))}
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return inFile(s.Include, yamlErrors(err))
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var f ShapingFile
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return inFile(s.Include, yamlErrors(err))
		}
		s.Included, c.includeRoot = f, &root
		return inFile(s.Include, yamlErrors(err))
	}
	s.Included, c.includeRoot = f, &root
	return nil
}

// maxIncludeBytes bounds an included file (the shipped one is ~20 KiB).
const maxIncludeBytes = 1 << 20

// readInclude reads a regular file of at most maxIncludeBytes.
func readInclude(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return nil, err
	} else if !fi.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	data, err := io.ReadAll(io.LimitReader(f, maxIncludeBytes+1))
	if err == nil && len(data) > maxIncludeBytes {
		err = fmt.Errorf("larger than %d bytes", maxIncludeBytes)
	}
	return data, err
}

func unwrapPathErr(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// inFile names file in front of each problem of err.
func inFile(file string, err error) error {
	if err == nil {
		return nil
	}
	var out []error
	for _, e := range splitJoined(err) {
		var p Problem
		if errors.As(e, &p) {
			p.File = file
			out = append(out, p)
			continue
		}
		out = append(out, Problem{File: file, Msg: e.Error()})
	}
	return errors.Join(out...)
}

func splitJoined(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// validateShaping checks delivery.shaping, its included file, and the
// max_per_destination alias.
func (c *Config) validateShaping(ps *problems) {
	s := c.Delivery.Shaping
	d := s.Default
	conns := shapingPath + ".default.connections"
	if !c.has("delivery", "shaping", "default", "connections") {
		conns = "delivery.max_per_destination"
	}
	positive(ps, conns, int64(c.Delivery.MaxPerDestination))
	notNegative(ps, shapingPath+".default.per_connection", d.PerConnection)
	if c.has("delivery", "max_per_destination") && c.has("delivery", "shaping", "default", "connections") &&
		c.Delivery.MaxPerDestination != d.Connections {
		ps.add("delivery.max_per_destination", "is an alias of delivery.shaping.default.connections: "+
			"set one of them (here %d, there %d)", c.Delivery.MaxPerDestination, d.Connections)
	}
	positive(ps, shapingPath+".backoff_for", int64(s.BackoffFor))
	known := map[string]bool{"*": true}
	for _, p := range s.AllProviders() {
		known[p.Name] = true
	}
	validateProviders(ps, shapingPath+".providers", s.Providers)
	validateRules(ps, shapingPath+".rules", s.Rules, known)
	if s.Include == "" {
		return
	}
	ips := &problems{c: &Config{root: c.includeRoot}}
	validateProviders(ips, "providers", s.Included.Providers)
	validateRules(ips, "rules", s.Included.Rules, known)
	if err := inFile(s.Include, ips.err()); err != nil {
		ps.errs = append(ps.errs, splitJoined(err)...)
	}
}

// validateProviders checks one list of providers at path.
func validateProviders(ps *problems, path string, list []Provider) {
	seen := map[string]bool{}
	for i, p := range list {
		at := fmt.Sprintf("%s[%d]", path, i)
		switch {
		case !providerName.MatchString(p.Name):
			ps.add(at+".name", "%q must be a name of lower-case letters, digits, - and _", p.Name)
		case seen[p.Name]:
			ps.add(at+".name", "provider %q is defined twice", p.Name)
		}
		seen[p.Name] = true
		if len(p.MX) == 0 {
			ps.add(at+".mx", "list the MX host suffixes (\".google.com\") or names of this provider")
		}
		for j, m := range p.MX {
			if !mxPattern.MatchString(m) {
				ps.add(fmt.Sprintf("%s.mx[%d]", at, j), "%q is not a host name or a suffix such as .google.com", m)
			}
		}
		notNegative(ps, at+".connections", p.Connections)
		notNegative(ps, at+".per_connection", p.PerConnection)
	}
}

// validateRules checks one list of rules at path; known holds the
// provider names a rule may name.
func validateRules(ps *problems, path string, list []ShapingRule, known map[string]bool) {
	for i, r := range list {
		at := fmt.Sprintf("%s[%d]", path, i)
		if len(r.Providers) == 0 {
			ps.add(at+".providers", "name the providers this rule watches, or [\"*\"]")
		}
		for j, p := range r.Providers {
			if !known[p] {
				ps.add(fmt.Sprintf("%s.providers[%d]", at, j), "%q is not a provider (nor \"*\")", p)
			}
		}
		if strings.TrimSpace(r.Reply) == "" {
			ps.add(at+".reply", "give a regular expression for the replies this rule counts")
		} else if _, err := ReplyPattern(r.Reply); err != nil {
			ps.add(at+".reply", "bad regular expression: %v", err)
		}
		if r.Threshold.Count == 0 {
			ps.add(at+".threshold", "give a threshold such as 3/10m")
		}
		validateAction(ps, at+".action", r.Action)
	}
}

func validateAction(ps *problems, at string, a ShapingAction) {
	switch {
	case a.Suspend > 0 && (!a.Rate.Unlimited() || a.For > 0):
		ps.add(at, "either suspend, or rate with for, not both")
	case a.Suspend > 0:
	case !a.Rate.Unlimited() && a.For > 0:
	case !a.Rate.Unlimited():
		ps.add(at+".for", "say how long the lower rate holds, e.g. for: 1h")
	case a.For > 0:
		ps.add(at+".rate", "say the lower rate, e.g. rate: 300/m")
	default:
		ps.add(at, "give {suspend: 30m} or {rate: 300/m, for: 1h}")
	}
}

// validateEgress checks delivery.sources, delivery.pools and the users'
// pools.
func (c *Config) validateEgress(ps *problems) {
	d := c.Delivery
	names := map[string]bool{}
	for i, s := range d.Sources {
		at := fmt.Sprintf("delivery.sources[%d]", i)
		switch {
		case !providerName.MatchString(s.Name):
			ps.add(at+".name", "%q must be a name of lower-case letters, digits, - and _", s.Name)
		case names[s.Name]:
			ps.add(at+".name", "source %q is defined twice", s.Name)
		}
		names[s.Name] = true
		if _, err := netip.ParseAddr(s.Address); err != nil {
			ps.add(at+".address", "%q is not an IP address", s.Address)
		}
		if s.EHLO != "" && fqdnWarning(s.EHLO) != "" {
			ps.add(at+".ehlo", "%s", fqdnWarning(s.EHLO))
		}
	}
	if len(d.Sources) > 0 && d.SourceIP != "" {
		ps.add("delivery.source_ip", "set either source_ip or sources (a source with this address)")
	}
	pools := make([]string, 0, len(d.Pools))
	for name := range d.Pools {
		pools = append(pools, name)
	}
	sort.Strings(pools)
	for _, name := range pools {
		list := d.Pools[name]
		at := "delivery.pools." + name
		if len(list) == 0 {
			ps.add(at, "list the sources of pool %q", name)
		}
		for j, s := range list {
			if !names[s] {
				ps.add(fmt.Sprintf("%s[%d]", at, j), "%q is not a source in delivery.sources", s)
			}
		}
	}
	for i, u := range c.Submission.Users {
		if _, ok := d.Pools[u.Pool]; u.Pool != "" && !ok {
			ps.add(fmt.Sprintf("submission.users[%d].pool", i), "%q is not a pool in delivery.pools", u.Pool)
		}
	}
}

func notNegative(ps *problems, path string, v int) {
	if v < 0 {
		ps.add(path, "must not be negative (0 = unlimited)")
	}
}

// applyShapingAlias makes delivery.max_per_destination and
// delivery.shaping.default.connections one setting: the one the file sets
// is copied to the other (both set and different is a problem).
func (c *Config) applyShapingAlias() {
	d := &c.Delivery
	switch {
	case c.has("delivery", "max_per_destination") && !c.has("delivery", "shaping", "default", "connections"):
		d.Shaping.Default.Connections = d.MaxPerDestination
	case !c.has("delivery", "max_per_destination"):
		d.MaxPerDestination = d.Shaping.Default.Connections
	}
}

// includeChanged reports whether the included files of a and b differ.
func includeChanged(a, b *Config) bool {
	return !reflect.DeepEqual(a.Delivery.Shaping.Included.Providers, b.Delivery.Shaping.Included.Providers) ||
		!reflect.DeepEqual(a.Delivery.Shaping.Included.Rules, b.Delivery.Shaping.Included.Rules)
}

// poolWarnings: with pools but none named default, users without a pool
// leave from the system's choice of address, outside every pool.
func (c *Config) poolWarnings() []Problem {
	if _, ok := c.Delivery.Pools["default"]; ok || len(c.Delivery.Pools) == 0 {
		return nil
	}
	var users []string
	for _, u := range c.Submission.Users {
		if u.Pool == "" {
			users = append(users, u.Name)
		}
	}
	if len(users) == 0 {
		return nil
	}
	return []Problem{{Path: "delivery.pools", Line: c.Line("delivery", "pools"), Msg: fmt.Sprintf(
		"no pool named default: users without a pool (%s) leave from the system's choice of address, "+
			"not through delivery.sources", strings.Join(users, ", "))}}
}
