package config

// This file and reference_source_test.go build docs/configuration.md from the
// schema itself: keys from the yaml tags of Config, types from the Go types,
// defaults from Default(), and the meaning from the fields' doc comments
// (read from this package's source with go/parser and go/doc, in the test so
// that the binary does not carry them). A field without a doc comment falls
// back to its comment in configs/jetrelay.yaml. TestReference fails when the
// file is stale; regenerate it with ReferenceCommand.

//go:generate go test -run TestReference -update .

import (
	"bytes"
	"fmt"
	"os"
	"reflect"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// ReferenceCommand regenerates docs/configuration.md (run from the repository root).
const ReferenceCommand = "go generate ./relay/config"

// defaultNotes replaces a default that Default() cannot show as a value: one
// that depends on the machine, or an unset optional that means true.
var defaultNotes = map[string]string{
	"hostname":                     "the machine's host name",
	"nats.server_name":             "<host name>-<port of nats.listen>",
	"nats.cluster":                 "unset (standalone)",
	"nats.cluster.name":            "jetrelay",
	"bounces.from":                 "MAILER-DAEMON@<hostname>",
	"bounces.suppress":             "true",
	"delivery.routes[].tls_verify": "true",
	"dkim.keys[].sign":             "true",
}

// Key is one configuration key: its dotted path ("[]" marks the elements of
// a list), the Go field it decodes into, and whether it is a leaf value.
type Key struct {
	Path  string
	Field reflect.StructField
	Owner reflect.Type // the struct type that declares the field
	Leaf  bool
	// InList is true when the key sits inside a list element (routes, users...).
	InList bool
}

// Keys returns every key of the configuration file, sections before their
// members, in declaration order.
func Keys() []Key {
	var out []Key
	walkKeys(reflect.TypeOf(Config{}), "", false, &out)
	return out
}

func walkKeys(t reflect.Type, prefix string, inList bool, out *[]Key) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name := yamlName(f)
		if name == "" {
			continue
		}
		path := prefix + name
		inner, list := sectionType(f.Type)
		*out = append(*out, Key{Path: path, Field: f, Owner: t, Leaf: inner == nil, InList: inList})
		if inner != nil {
			if list {
				path += "[]"
			}
			walkKeys(inner, path+".", inList || list, out)
		}
	}
}

// yamlName is the key a field decodes from; "" for fields not in the file.
func yamlName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "-" {
		return ""
	}
	if name == "" {
		name = strings.ToLower(f.Name)
	}
	return name
}

var unmarshalerType = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()

// sectionType returns the struct a field's keys live in (nil for a leaf
// value) and whether it is a list of such structs.
func sectionType(t reflect.Type) (reflect.Type, bool) {
	list := false
	if t.Kind() == reflect.Slice {
		t, list = t.Elem(), true
	}
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || reflect.PointerTo(t).Implements(unmarshalerType) {
		return nil, false
	}
	return t, list
}

// section writes the table of one struct's keys, then its sub-sections.
func (d sourceDocs) section(b *bytes.Buffer, t reflect.Type, path string, def reflect.Value) {
	title := "`" + path + "`"
	if path == "" {
		title = "Top level"
	}
	fmt.Fprintf(b, "\n## %s\n\n", title)
	if doc := d.types[t.Name()]; doc != "" {
		fmt.Fprintf(b, "%s\n\n", doc)
	}
	b.WriteString("| key | type | default | on reload | meaning |\n|---|---|---|---|---|\n")
	var subs []reflect.StructField
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name := yamlName(f)
		if name == "" {
			continue
		}
		key := join(path, name)
		inner, list := sectionType(f.Type)
		meaning := d.fields[t.Name()+"."+f.Name]
		reload := ClassOf(key).String()
		switch {
		case inner != nil && list:
			meaning = oneLine(d.types[inner.Name()] + " " + meaning + " " + d.example[plain(key)])
			subs = append(subs, f)
		case inner != nil:
			meaning = oneLine(meaning + " See `" + key + "` below.")
			subs = append(subs, f)
			reload = ""
		case meaning == "":
			meaning = d.example[plain(key)]
		}
		fmt.Fprintf(b, "| `%s` | %s | %s | %s | %s |\n", key, typeName(f.Type), defaultOf(key, def), reload,
			cell(meaning))
	}
	for _, f := range subs {
		inner, list := sectionType(f.Type)
		key := join(path, yamlName(f))
		if list {
			key += "[]"
		}
		d.section(b, inner, key, def)
	}
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// plain drops the list markers of a key path.
func plain(path string) string { return strings.ReplaceAll(path, "[]", "") }

const referenceIntro = `# Configuration reference

<!-- Generated from relay/config by "` + ReferenceCommand + `"; do not edit. -->

jetrelay reads one YAML file (` + "`jetrelay serve --config FILE`" + `); ` + "`configs/jetrelay.yaml`" + ` is a
commented example of every key, and ` + "`jetrelay check --config FILE`" + ` lists every problem in a file
with its line. Unknown keys are errors. Types: a *duration* is a Go duration (` + "`90s`, `5m`, `48h`" + `;
` + "`0`" + ` = none), a *size* is bytes or a number with a unit (` + "`512KiB`, `25MiB`, `1GiB`, `10MB`" + `), a
*rate* is ` + "`N/s`, `N/m` or `N/h` (`\"\"`" + ` = unlimited). Without ` + "`--config`" + ` the relay runs on these
defaults plus a generated loopback user ` + "`dev`" + `.
The "on reload" column says whether a changed key takes effect on SIGHUP (live) or only after a
restart (restart: a reload keeps the running value and names the key in its ` + "`restart_needed`" + `
log field); ` + "`jetrelay check --reload-diff OLD NEW`" + ` lists both for two files.
`

func parentPath(path string) string {
	i := strings.LastIndex(path, ".")
	if i < 0 {
		return ""
	}
	return path[:i]
}

// cell makes text safe inside a Markdown table cell.
func cell(s string) string {
	return strings.NewReplacer("|", `\|`, "<", "&lt;", ">", "&gt;").Replace(s)
}

func typeName(t reflect.Type) string {
	switch t {
	case reflect.TypeOf(Duration(0)):
		return "duration"
	case reflect.TypeOf(Size(0)):
		return "size"
	case reflect.TypeOf(Rate{}):
		return "rate"
	}
	if t.Kind() == reflect.Struct && reflect.PointerTo(t).Implements(unmarshalerType) {
		return strings.ToLower(t.Name()) // a scalar with its own syntax
	}
	switch t.Kind() {
	case reflect.Pointer:
		return typeName(t.Elem())
	case reflect.Slice:
		return "list of " + typeName(t.Elem())
	case reflect.Map:
		return "map of " + typeName(t.Key()) + " to " + typeName(t.Elem())
	case reflect.Struct:
		return "section"
	}
	return t.Kind().String()
}

// defaultOf formats the default of the key at path, read from def (the
// Config from Default()); keys inside list elements have none.
func defaultOf(path string, def reflect.Value) string {
	if note, ok := defaultNotes[path]; ok {
		return note
	}
	if strings.Contains(path, "[]") {
		return ""
	}
	v := def
	for _, name := range strings.Split(path, ".") {
		v = fieldByKey(v, name)
	}
	if t, _ := sectionType(v.Type()); t != nil && v.Kind() != reflect.Slice {
		return ""
	}
	return "`" + cell(formatValue(v)) + "`"
}

func fieldByKey(v reflect.Value, key string) reflect.Value {
	if v.Kind() == reflect.Pointer {
		if v.IsNil() { // an optional section left out: its keys' zero values
			v = reflect.Zero(v.Type().Elem())
		} else {
			v = v.Elem()
		}
	}
	for i := 0; i < v.NumField(); i++ {
		if yamlName(v.Type().Field(i)) == key {
			return v.Field(i)
		}
	}
	panic("config reference: no key " + key + " in " + v.Type().String())
}

// formatValue writes v as it would be written in the file.
func formatValue(v reflect.Value) string {
	switch x := v.Interface().(type) {
	case Duration:
		return formatDuration(x.D())
	case Size:
		return formatSize(x)
	case Rate:
		return fmt.Sprintf("%q", x.Source)
	case string:
		if x == "" {
			return `""`
		}
		return x
	case fmt.Stringer:
		return x.String()
	}
	switch v.Kind() {
	case reflect.Slice:
		parts := make([]string, v.Len())
		for i := range parts {
			parts[i] = formatValue(v.Index(i))
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case reflect.Map:
		if v.Len() == 0 {
			return "{}"
		}
	case reflect.Pointer:
		if v.IsNil() {
			return "unset"
		}
		return formatValue(v.Elem())
	case reflect.Struct:
		var parts []string
		for i := 0; i < v.NumField(); i++ {
			if name := yamlName(v.Type().Field(i)); name != "" && !v.Field(i).IsZero() {
				parts = append(parts, name+": "+formatValue(v.Field(i)))
			}
		}
		return "{" + strings.Join(parts, ", ") + "}"
	}
	return fmt.Sprint(v.Interface())
}

func formatDuration(d time.Duration) string {
	if d == 0 {
		return "0"
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func formatSize(s Size) string {
	for _, u := range []struct {
		suffix string
		mult   Size
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if s != 0 && s%u.mult == 0 {
			return fmt.Sprintf("%d%s", s/u.mult, u.suffix)
		}
	}
	return fmt.Sprint(int64(s))
}

// sourceDocs holds doc comments: types by name, fields by "Type.Field", and
// the example file's comments by plain key path.
type sourceDocs struct {
	types, fields, example map[string]string
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// exampleDocs returns the comments of the example file by dotted key path
// (list indexes dropped): the comment on the key's line. Comments above a key
// are not used: in the example they often continue the line before.
func exampleDocs(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	out := map[string]string{}
	if len(root.Content) > 0 {
		collectComments(root.Content[0], "", out)
	}
	return out, nil
}

func collectComments(n *yaml.Node, prefix string, out map[string]string) {
	switch n.Kind {
	case yaml.SequenceNode:
		for _, c := range n.Content {
			collectComments(c, prefix, out)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			path := prefix + k.Value
			text := oneLine(strings.TrimPrefix(oneLine(k.LineComment+" "+v.LineComment), "#"))
			if text != "" && out[path] == "" {
				out[path] = text
			}
			collectComments(v, path+".", out)
		}
	}
}
