package config

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

var update = flag.Bool("update", false, "rewrite docs/configuration.md from the config structs")

var (
	referencePath = filepath.Join("..", "..", "docs", "configuration.md")
	examplePath   = filepath.Join("..", "..", "configs", "jetrelay.yaml")
)

// TestReference fails when docs/configuration.md does not match what the
// config structs, Default() and their doc comments say.
func TestReference(t *testing.T) {
	got, err := Reference(".", examplePath)
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(referencePath, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(referencePath)
	if err != nil {
		t.Fatalf("%v; generate it with: %s", err, ReferenceCommand)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("docs/configuration.md is stale (first difference at line %d); regenerate it with: %s",
			firstDiffLine(got, want), ReferenceCommand)
	}
}

func firstDiffLine(a, b []byte) int {
	la, lb := strings.Split(string(a), "\n"), strings.Split(string(b), "\n")
	for i := range la {
		if i >= len(lb) || la[i] != lb[i] {
			return i + 1
		}
	}
	return len(la) + 1
}

// TestReferenceCoversEveryKey checks the generator itself: every key gets a
// row with its type, and every default note names a real key.
func TestReferenceCoversEveryKey(t *testing.T) {
	got, err := Reference(".", examplePath)
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	for _, k := range Keys() {
		known[k.Path] = true
		if !bytes.Contains(got, []byte("| `"+k.Path+"` | ")) {
			t.Errorf("no row for %s", k.Path)
		}
	}
	for path := range defaultNotes {
		if !known[path] {
			t.Errorf("defaultNotes names %q, which is no key", path)
		}
	}
	for _, want := range []string{"| `submission.max_message_bytes` | size | `25MiB` |",
		"| `delivery.retry.schedule` | list of duration | `[1m, 5m, 15m, 30m, 1h, 2h, 4h]` |",
		"| `nats.sync` | string | `always` | restart | Sync is \"always\"",
		"| `delivery.dns.servers` | list of string | `[]` | live |"} {
		if !bytes.Contains(got, []byte(want)) {
			t.Errorf("reference lacks %q", want)
		}
	}
}

// TestExampleHasEveryKey checks that configs/jetrelay.yaml shows every key.
// A key counts as shown when it is in the parsed YAML (in any element of a
// list), or, for keys inside list elements and optional sub-sections that the
// example leaves empty, when "name:" appears in a comment within the block of
// the nearest enclosing key the example does set. For example
//
//	routes: []
//	#  - {domains: ["*"], host: "smtp.upstream.example:587", tls: starttls}
//
// shows delivery.routes[].domains, .host and .tls.
func TestExampleHasEveryKey(t *testing.T) {
	data, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		t.Fatal(err)
	}
	ex := exampleIndex{lines: strings.Split(string(data), "\n"), blocks: map[string]block{}}
	ex.index(root.Content[0], "", len(ex.lines)+1)
	for _, k := range Keys() {
		if err := ex.shows(k); err != "" {
			t.Errorf("configs/jetrelay.yaml does not show %s: %s", k.Path, err)
		}
	}
}

// block is the lines [from, to) a key of the example covers: its own line up
// to the next key of its parent mapping.
type block struct{ from, to int }

type exampleIndex struct {
	lines  []string
	blocks map[string]block // by dotted path, list indexes dropped
}

func (ex *exampleIndex) index(n *yaml.Node, prefix string, end int) {
	switch n.Kind {
	case yaml.SequenceNode:
		for i, c := range n.Content {
			next := end
			if i+1 < len(n.Content) {
				next = n.Content[i+1].Line
			}
			ex.index(c, prefix, next)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			next := end
			if i+2 < len(n.Content) {
				next = n.Content[i+2].Line
			}
			path := prefix + n.Content[i].Value
			if b, ok := ex.blocks[path]; !ok || b.to < next {
				ex.blocks[path] = block{from: n.Content[i].Line, to: next}
			}
			ex.index(n.Content[i+1], path+".", next)
		}
	}
}

// shows returns "" when the example shows key k, else why not. A leaf of a
// section the example sets must be set too; a commented form is accepted for
// keys inside list elements, section keys, and keys of a section the example
// leaves out (an optional block shown as a comment).
func (ex *exampleIndex) shows(k Key) string {
	path := strings.ReplaceAll(k.Path, "[]", "")
	if _, ok := ex.blocks[path]; ok {
		return ""
	}
	parent := parentPath(path)
	if _, ok := ex.blocks[parent]; ok && parent != "" && k.Leaf && !k.InList {
		return "the key is missing"
	}
	for parent != "" {
		if b, ok := ex.blocks[parent]; ok {
			return ex.commented(b, k, parent)
		}
		parent = parentPath(parent)
	}
	return ex.commented(block{from: 1, to: len(ex.lines) + 1}, k, "whole file")
}

// commented looks for "name:" in the comments of block b.
func (ex *exampleIndex) commented(b block, k Key, where string) string {
	name := regexp.MustCompile(`(^|[\s{,-])` + regexp.QuoteMeta(yamlName(k.Field)) + `:`)
	for l := b.from; l < b.to && l <= len(ex.lines); l++ {
		line := ex.lines[l-1]
		if i := strings.Index(line, "#"); i >= 0 && name.MatchString(line[i+1:]) {
			return ""
		}
	}
	return fmt.Sprintf("the key is missing, and no comment in the %s block (lines %d-%d) shows it",
		where, b.from, b.to-1)
}
