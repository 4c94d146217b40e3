package config

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Schema problems (unknown keys, values of the wrong type) are collected by
// walking the YAML node tree next to the Config type, so that each names its
// path, its line and, for a misspelt key, the nearest valid key at that path.
// The decoder then still fills everything that does decode, and Validate runs
// over it: a typo never hides a missing file further down.

// leaf is a node where the walk stopped: a scalar, a custom-decoded value
// or a node of the wrong kind. yaml.v3's type errors name only a line, so
// leaves map them back to a path.
type leaf struct {
	path  string
	value string
}

// schemaWalk collects unknown keys and the leaves of the tree by line.
type schemaWalk struct {
	unknown []Problem
	leaves  map[int][]leaf
}

// checkSchema walks root against the Config type.
func checkSchema(root *yaml.Node) *schemaWalk {
	w := &schemaWalk{leaves: map[int][]leaf{}}
	if root != nil && root.Kind == yaml.DocumentNode && len(root.Content) > 0 {
		w.walk(root.Content[0], reflect.TypeOf(Config{}), "")
	}
	return w
}

func (w *schemaWalk) walk(n *yaml.Node, t reflect.Type, path string) {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	custom := reflect.PointerTo(t).Implements(unmarshalerType) && t.Kind() != reflect.Slice
	if custom || n.Tag == "!!null" {
		w.addLeaf(n, path)
		return
	}
	switch {
	case t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
		w.walkStruct(n, t, path)
	case t.Kind() == reflect.Map && n.Kind == yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			w.walk(n.Content[i+1], t.Elem(), join(path, n.Content[i].Value))
		}
	case t.Kind() == reflect.Slice && n.Kind == yaml.SequenceNode:
		for i, c := range n.Content {
			w.walk(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	default:
		w.addLeaf(n, path)
	}
}

func (w *schemaWalk) walkStruct(n *yaml.Node, t reflect.Type, path string) {
	fields := yamlFields(t)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Value == "<<" { // a merge key: its keys are checked where they are defined
			continue
		}
		f, ok := fields[k.Value]
		if !ok {
			w.unknown = append(w.unknown, unknownKey(k, path, fields))
			continue
		}
		w.walk(v, f, join(path, k.Value))
	}
}

func (w *schemaWalk) addLeaf(n *yaml.Node, path string) {
	w.leaves[n.Line] = append(w.leaves[n.Line], leaf{path: path, value: n.Value})
}

// unknownKey reports key k at path, suggesting the nearest valid key.
func unknownKey(k *yaml.Node, path string, fields map[string]reflect.Type) Problem {
	names := make([]string, 0, len(fields))
	for name := range fields {
		names = append(names, name)
	}
	sort.Strings(names)
	msg := "unknown key"
	if s := suggest(k.Value, names); s != "" {
		msg += fmt.Sprintf("; did you mean %q?", s)
	} else {
		msg += " (valid keys here: " + strings.Join(names, ", ") + ")"
	}
	return Problem{Path: join(path, k.Value), Line: k.Line, Msg: msg}
}

// yamlFields maps the YAML keys of struct type t to their field types.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if name := yamlName(f); name != "" && f.IsExported() {
			out[name] = f.Type
		}
	}
	return out
}

var typeErrLine = regexp.MustCompile(`^line (\d+): (.*)$`)

// schemaErrors turns the decoder's type errors into Problems with paths.
// Unknown-field errors are dropped: the walk reports them with a suggestion.
func (w *schemaWalk) schemaErrors(te *yaml.TypeError) []Problem {
	out := append([]Problem(nil), w.unknown...)
	unknownAt := map[int]bool{}
	for _, p := range w.unknown {
		unknownAt[p.Line] = true
	}
	for _, e := range te.Errors {
		e = strings.TrimPrefix(e, "yaml: ")
		m := typeErrLine.FindStringSubmatch(e)
		if m == nil {
			out = append(out, Problem{Msg: e})
			continue
		}
		line, _ := strconv.Atoi(m[1])
		if unknownField.MatchString(e) && unknownAt[line] {
			continue
		}
		out = append(out, Problem{Path: w.pathAt(line, m[2]), Line: line, Msg: m[2]})
	}
	return out
}

// pathAt names the setting a type error on line is about: the one leaf on
// the line, the leaf whose value the message quotes, or their common parent.
func (w *schemaWalk) pathAt(line int, msg string) string {
	ls := w.leaves[line]
	if len(ls) == 0 {
		return ""
	}
	var quoted []string
	for _, l := range ls {
		if l.value != "" && (strings.Contains(msg, strconv.Quote(l.value)) || strings.Contains(msg, "`"+l.value+"`")) {
			quoted = append(quoted, l.path)
		}
	}
	if len(quoted) == 1 {
		return quoted[0]
	}
	prefix := ls[0].path
	for _, l := range ls[1:] {
		prefix = commonPath(prefix, l.path)
	}
	return prefix
}

// commonPath returns the longest common dotted prefix of a and b.
func commonPath(a, b string) string {
	pa := strings.FieldsFunc(a, isPathSep)
	pb := strings.FieldsFunc(b, isPathSep)
	n := 0
	for n < len(pa) && n < len(pb) && pa[n] == pb[n] {
		n++
	}
	var sb strings.Builder
	for i, p := range pa[:n] {
		if i > 0 && !strings.HasSuffix(p, "]") {
			sb.WriteByte('.')
		}
		if strings.HasSuffix(p, "]") {
			sb.WriteByte('[')
		}
		sb.WriteString(p)
	}
	return sb.String()
}

func isPathSep(r rune) bool { return r == '.' || r == '[' }

// suggest returns the candidate nearest to s when it is near enough to be
// a likely typo (edit distance at most a third of the word, at least 2,
// and no other candidate as near), else the one candidate s is a prefix of
// (or that is a prefix of s), else "".
func suggest(s string, candidates []string) string {
	best, bestD, tie := "", -1, false
	for _, c := range candidates {
		d := editDistance(strings.ToLower(s), c)
		switch {
		case bestD < 0 || d < bestD:
			best, bestD, tie = c, d, false
		case d == bestD:
			tie = true // two equally near words: no guess
		}
	}
	if tie {
		bestD = -1
	}
	limit := max(2, len(s)/3)
	if bestD >= 0 && bestD <= limit && bestD < len(s) {
		return best
	}
	return prefixMatch(strings.ToLower(s), candidates)
}

// prefixMatch returns the one candidate that starts with s or that s
// starts with ("warning" → "warn", "opp" → "opportunistic"), or "".
func prefixMatch(s string, candidates []string) string {
	found := ""
	for _, c := range candidates {
		if len(s) >= 3 && (strings.HasPrefix(c, s) || strings.HasPrefix(s, c)) {
			if found != "" {
				return ""
			}
			found = c
		}
	}
	return found
}

// editDistance is the optimal-string-alignment distance: insertions,
// deletions, substitutions and transpositions of neighbours cost 1.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}

// mergeProblems joins schema problems and validation problems. A field
// with a schema problem kept its default; a validation problem at the same
// path would only repeat it.
func mergeProblems(schema []Problem, verr error) error {
	out := make([]error, 0, len(schema))
	bad := map[string]bool{}
	for _, p := range schema {
		out = append(out, p)
		if p.Path != "" {
			bad[p.Path] = true
		}
	}
	for _, e := range flatten(verr) {
		if p, ok := e.(Problem); ok && bad[p.Path] {
			continue
		}
		out = append(out, e)
	}
	sort.SliceStable(out, func(i, j int) bool { return lineOf(out[i]) < lineOf(out[j]) })
	return errors.Join(out...)
}

// lineOf orders problems by line, those without one last.
func lineOf(err error) int {
	if p, ok := err.(Problem); ok && p.Line > 0 && p.File == "" { // an included file's come after
		return p.Line
	}
	return int(^uint(0) >> 1)
}

// flatten lists the leaves of an errors.Join tree.
func flatten(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

// asTypeError reports whether err holds only type errors (the decode went on).
func asTypeError(err error) (*yaml.TypeError, bool) {
	var te *yaml.TypeError
	ok := errors.As(err, &te)
	return te, ok
}
