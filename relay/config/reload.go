package config

import (
	"reflect"
	"slices"
	"sort"
	"strings"
)

// Reload classes. Every key of the file is either applied on SIGHUP (Live)
// or only read at start (Restart); reloadClasses says which, for a key or
// for a whole section (a key inherits the class of its nearest classified
// parent). One table serves both the running relay (its reload log line
// names the restart_needed keys) and `jetrelay check --reload-diff`.
// TestReloadClassesCoverEveryKey fails for a key that has no class.

// ReloadClass says when a changed setting takes effect.
type ReloadClass int

const (
	// Live settings take effect on SIGHUP.
	Live ReloadClass = iota + 1
	// Restart settings take effect only after a restart; a reload keeps
	// the running value.
	Restart
)

func (c ReloadClass) String() string {
	switch c {
	case Live:
		return "live"
	case Restart:
		return "restart"
	}
	return "unclassified"
}

// reloadClasses classifies the configuration. Restart entries are the
// settings a component reads only when it starts: listener addresses and
// what their go-smtp servers were built with, the queue's connection, the
// data directory and the logger.
var reloadClasses = map[string]ReloadClass{
	"hostname":     Restart, // greeting and EHLO of the listeners
	"data_dir":     Restart,
	"nats":         Restart, // the queue's connection and the embedded server (cluster included)
	"memory_limit": Live,
	"gc_percent":   Live,

	"submission":                    Live, // users, rates, limits checked per connection or command
	"submission.listeners":          Restart,
	"submission.proxy_from":         Restart, // listeners are wrapped at start
	"submission.tls":                Live,    // the next handshake uses the new certificate
	"submission.max_message_bytes":  Restart, // go-smtp limits, set when a listener starts
	"submission.max_recipients":     Restart,
	"submission.max_line_length":    Restart,
	"submission.max_inflight_bytes": Restart,
	"submission.timeouts.idle":      Restart,

	"delivery":             Live, // everything, including the resolver and the dialer
	"delivery.dns.servers": Live,
	"delivery.dns.dnssec":  Live, // a new resolver (its cache starts empty)
	"delivery.dane":        Live, // the next attempt looks TLSA up, or not
	"delivery.port":        Live,
	"delivery.source_ip":   Live,
	"delivery.shaping":     Live, // the Shaper's Apply: new limits for the next decision, open connections stay
	"delivery.sources":     Live, // the next connection binds the new sources
	"delivery.pools":       Live,
	"delivery.mta_sts":     Live, // the next lookup uses the new settings; cached policies stay in KV

	"delivery.tls_rpt": Restart, // the session counter and the daily reporter are built at start

	"bounces":              Live,
	"bounces.listen":       Restart,
	"bounces.suppress_for": Restart, // the suppression bucket's TTL

	"dkim":   Live,
	"events": Live, // the events stream's limits
	"admin":  Restart,
	"log":    Restart,

	"webhooks":     Live,    // senders are started, stopped or restarted per webhook
	"events.index": Restart, // the indexer and its streams are set up at start

	"admin.console.users": Live, // the console checks the running users at each request
}

// ClassOf returns the reload class of a key path as Keys spells it
// ("delivery.routes[].host"); 0 when neither the key nor a parent is
// classified.
func ClassOf(path string) ReloadClass {
	p := strings.ReplaceAll(path, "[]", "")
	for {
		if c, ok := reloadClasses[p]; ok {
			return c
		}
		i := strings.LastIndexByte(p, '.')
		if i < 0 {
			return 0
		}
		p = p[:i]
	}
}

// Changes are the settings that differ between two configurations, by
// reload class: each a key path, lists compared as a whole.
type Changes struct {
	Live    []string
	Restart []string
}

// Empty reports whether nothing changed.
func (c Changes) Empty() bool { return len(c.Live) == 0 && len(c.Restart) == 0 }

// Diff compares old and next key by key. Sections are descended into;
// lists, maps and values are compared whole.
func Diff(old, next *Config) Changes {
	var ch Changes
	diffStruct(reflect.ValueOf(*old), reflect.ValueOf(*next), "", &ch)
	if includeChanged(old, next) && !slices.Contains(ch.Live, shapingPath+".include") {
		ch.Live = append(ch.Live, shapingPath+".include") // the file named by it changed
	}
	sort.Strings(ch.Live)
	sort.Strings(ch.Restart)
	return ch
}

func diffStruct(a, b reflect.Value, prefix string, ch *Changes) {
	t := a.Type()
	for i := 0; i < t.NumField(); i++ {
		name := yamlName(t.Field(i))
		if name == "" {
			continue
		}
		path := prefix + name
		fa, fb := a.Field(i), b.Field(i)
		if inner, list := sectionType(fa.Type()); inner != nil && !list && fa.Kind() == reflect.Struct {
			diffStruct(fa, fb, path+".", ch)
			continue
		}
		if reflect.DeepEqual(fa.Interface(), fb.Interface()) {
			continue
		}
		if ClassOf(path) == Restart {
			ch.Restart = append(ch.Restart, path)
		} else {
			ch.Live = append(ch.Live, path)
		}
	}
}

// KeepRestart returns a copy of next whose Restart settings are old's: the
// configuration a reload applies, since the running relay cannot change
// those without a restart.
func KeepRestart(old, next *Config) *Config {
	out := *next
	keepStruct(reflect.ValueOf(old).Elem(), reflect.ValueOf(&out).Elem(), "")
	return &out
}

func keepStruct(from, to reflect.Value, prefix string) {
	t := from.Type()
	for i := 0; i < t.NumField(); i++ {
		name := yamlName(t.Field(i))
		if name == "" {
			continue
		}
		path := prefix + name
		if _, ok := reloadClasses[path]; ok && ClassOf(path) == Restart {
			to.Field(i).Set(from.Field(i))
			continue
		}
		if inner, list := sectionType(from.Field(i).Type()); inner != nil && !list && from.Field(i).Kind() == reflect.Struct {
			keepStruct(from.Field(i), to.Field(i), path+".")
		}
	}
}
