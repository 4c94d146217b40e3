package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// Load reads, decodes strictly and validates a config file. The error, if
// any, lists every problem found, one per line, each with its line number.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c, err := parse(data, filepath.Dir(path))
	if c != nil {
		c.Path = path
	}
	return c, err
}

// Parse decodes and validates YAML bytes. On validation problems it returns
// the config too (for tools that want to look at it) along with the error.
func Parse(data []byte) (*Config, error) { return parse(data, ".") }

// parse decodes data; relative file paths that do not exist relative to the
// working directory are looked up relative to dir (the config file's).
func parse(data []byte, dir string) (*Config, error) {
	c := Default()
	c.Dev = false
	c.NATS.ServerName = "" // derived from the file's nats.listen unless set
	c.Submission.Listeners = nil
	c.Submission.Users = nil
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, yamlErrors(err)
	}
	c.root = &root
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	derr := dec.Decode(c)
	te, typeErrs := asTypeError(derr)
	if derr != nil && !errors.Is(derr, io.EOF) && !typeErrs {
		return nil, yamlErrors(derr) // also excessive aliasing: walk nothing
	}
	// Type errors leave their fields at the defaults and the decoder goes
	// on: the walk names them, and what did decode is validated, so that
	// one run shows every problem.
	walk := checkSchema(&root)
	schema := walk.unknown
	if typeErrs {
		schema = walk.schemaErrors(te)
	}
	if len(c.Submission.Listeners) == 0 {
		c.Submission.Listeners = Default().Submission.Listeners
	}
	c.applyDerivedDefaults()
	c.resolvePaths(dir)
	c.Delivery.Shaping.resolveInclude(dir)
	incl := c.loadInclude()
	return c, mergeProblems(schema, errors.Join(incl, c.Validate()))
}

// yamlErrors turns yaml.v3's errors into one problem per line.
func yamlErrors(err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		errs := make([]error, 0, len(te.Errors))
		for _, e := range te.Errors {
			e = strings.TrimPrefix(e, "yaml: ")
			if m := unknownField.FindStringSubmatch(e); m != nil {
				e = fmt.Sprintf("%sunknown key %q (no such setting in %s)", m[1], m[2], sectionName(m[3]))
			}
			errs = append(errs, errors.New(e))
		}
		return errors.Join(errs...)
	}
	return errors.New(strings.TrimPrefix(err.Error(), "yaml: "))
}

var unknownField = regexp.MustCompile(`^(line \d+: )field (\S+) not found in type config\.(\w+)$`)

// sectionName turns a Go type name from a yaml.v3 message into words.
func sectionName(typ string) string {
	if typ == "Config" {
		return "the top level"
	}
	return "a " + typ + " section"
}

// resolvePaths makes relative file paths relative to the config file's directory
// only when they do not exist relative to the working directory; data_dir stays
// relative to the working directory, as the README shows.
func (c *Config) resolvePaths(dir string) {
	fix := func(p *string) {
		if *p == "" || filepath.IsAbs(*p) {
			return
		}
		if _, err := os.Stat(*p); err == nil {
			return
		}
		if cand := filepath.Join(dir, *p); fileExists(cand) {
			*p = cand
		}
	}
	fix(&c.Submission.TLS.Cert)
	fix(&c.Submission.TLS.Key)
	fix(&c.Delivery.TLS.CAFile)
	fix(&c.NATS.Credentials)
	fix(&c.NATS.PasswordFile)
	c.NATS.Cluster.resolvePaths(fix)
	for i := range c.DKIM.Keys {
		fix(&c.DKIM.Keys[i].Key)
	}
	for i := range c.Webhooks {
		fix(&c.Webhooks[i].SecretFile)
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// Line returns the line of the YAML node at path (keys and list indexes as
// strings), or of its nearest existing parent; 0 when unknown.
func (c *Config) Line(path ...string) int {
	if c.root == nil || len(c.root.Content) == 0 {
		return 0
	}
	n := c.root.Content[0]
	line := n.Line
	for _, p := range path {
		next := child(n, p)
		if next == nil {
			return line
		}
		n = next
		line = n.Line
	}
	return line
}

// has reports whether the file sets the key at path.
func (c *Config) has(path ...string) bool {
	if c.root == nil || len(c.root.Content) == 0 {
		return false
	}
	n := c.root.Content[0]
	for _, p := range path {
		if n = child(n, p); n == nil {
			return false
		}
	}
	return true
}

func child(n *yaml.Node, key string) *yaml.Node {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == key {
				if n.Content[i+1].Kind == yaml.ScalarNode {
					return n.Content[i+1]
				}
				// Point at the key: a block's value node starts on the next line.
				v := *n.Content[i+1]
				v.Line = n.Content[i].Line
				return &v
			}
		}
	case yaml.SequenceNode:
		var idx int
		if _, err := fmt.Sscanf(key, "%d", &idx); err == nil && idx >= 0 && idx < len(n.Content) {
			return n.Content[idx]
		}
	}
	return nil
}
