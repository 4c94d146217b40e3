package main

import (
	"errors"
	"maps"
	"mime"
	"slices"
	"sort"
	"strings"
)

// metaFlag is `logs --meta key=value`, repeatable: every pair must match
// (events.Filter.Meta). Keys are lower-cased as submission stores them
// (relay/submit/meta.go); values match exactly.
type metaFlag struct{ m *map[string]string }

func (f metaFlag) String() string {
	if f.m == nil || *f.m == nil {
		return ""
	}
	var pairs []string
	for k, v := range *f.m {
		pairs = append(pairs, k+"="+v)
	}
	sort.Strings(pairs)
	return strings.Join(pairs, ",")
}

// writeMeta writes `send --meta` and `--tag` as the header fields the
// relay takes them from (relay/submit/meta.go), non-ASCII values as RFC
// 2047 encoded-words, keys in order.
func writeMeta(hdr func(k, v string), meta map[string]string, tag string) {
	for _, k := range slices.Sorted(maps.Keys(meta)) {
		hdr("X-Jetrelay-Meta-"+k, mime.QEncoding.Encode("utf-8", meta[k]))
	}
	if tag != "" {
		hdr("X-Jetrelay-Tag", mime.QEncoding.Encode("utf-8", tag))
	}
}

func (f metaFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	k = strings.ToLower(strings.TrimSpace(k))
	if !ok || k == "" || strings.ContainsFunc(k, func(r rune) bool { return r <= ' ' || r == ':' || r >= 0x7f }) {
		return errors.New("want key=value (the key of an X-Jetrelay-Meta-<key> header field)")
	}
	if *f.m == nil {
		*f.m = map[string]string{}
	}
	(*f.m)[k] = v
	return nil
}
