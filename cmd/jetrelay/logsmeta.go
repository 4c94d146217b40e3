package main

import (
	"errors"
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

func (f metaFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	k = strings.ToLower(strings.TrimSpace(k))
	if !ok || k == "" {
		return errors.New("want key=value (the key of an X-Jetrelay-Meta-<key> header field)")
	}
	if *f.m == nil {
		*f.m = map[string]string{}
	}
	(*f.m)[k] = v
	return nil
}
