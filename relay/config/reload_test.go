package config

import (
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestReloadClassesCoverEveryKey: every key of the file has a reload
// class, and every entry of the table names a real key.
func TestReloadClassesCoverEveryKey(t *testing.T) {
	known := map[string]bool{}
	for _, k := range Keys() {
		known[plain(k.Path)] = true
		if ClassOf(k.Path) == 0 {
			t.Errorf("config key %s has no reload class: add it (or a parent) to reloadClasses in reload.go", k.Path)
		}
	}
	for p := range reloadClasses {
		if !known[p] {
			t.Errorf("reloadClasses names %s, which is not a config key", p)
		}
	}
}

func TestClassOf(t *testing.T) {
	for path, want := range map[string]ReloadClass{
		"nats.url":                   Restart,
		"submission.users[].name":    Live,
		"submission.listeners[].tls": Restart,
		"submission.timeouts.idle":   Restart,
		"submission.timeouts.data":   Live,
		"delivery.dns.servers":       Live,
		"delivery.routes[].host":     Live,
		"bounces.verp_domain":        Live,
		"bounces.intake.idle":        Live,
		"bounces.listen":             Restart,
		"no_such_key":                0,
	} {
		if got := ClassOf(path); got != want {
			t.Errorf("ClassOf(%s) = %v, want %v", path, got, want)
		}
	}
}

func TestDiffAndKeepRestart(t *testing.T) {
	old := Default()
	next := Default()
	next.Delivery.DNS.Servers = []string{"127.0.0.1:5353"}
	next.Delivery.Retry.MaxAge = Duration(time.Hour)
	next.Bounces.VERPDomain = "bounces.example.org"
	next.NATS.Listen = "127.0.0.1:4333"
	next.Submission.Timeouts.Idle = Duration(time.Minute)
	next.Submission.Listeners = append(slices.Clone(next.Submission.Listeners),
		Listener{Addr: "127.0.0.1:2626", TLS: "starttls"})
	next.Submission.Timeouts.Data = Duration(time.Minute)

	got := Diff(old, next)
	want := Changes{
		Live: []string{"bounces.verp_domain", "delivery.dns.servers", "delivery.retry.max_age",
			"submission.timeouts.data"},
		Restart: []string{"nats.listen", "submission.listeners", "submission.timeouts.idle"},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("Diff (-want +got):\n%s", d)
	}
	if !Diff(old, old).Empty() {
		t.Error("a config differs from itself")
	}

	kept := KeepRestart(old, next)
	if d := Diff(old, kept); len(d.Restart) != 0 || !slices.Equal(d.Live, want.Live) {
		t.Errorf("KeepRestart kept %+v, want only the live changes", d)
	}
	if next.NATS.Listen != "127.0.0.1:4333" || len(next.Submission.Listeners) != len(old.Submission.Listeners)+1 {
		t.Error("KeepRestart changed its argument")
	}
}
