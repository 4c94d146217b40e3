package main

import (
	"bytes"
	"runtime/debug"
	"strings"
	"testing"
)

func TestVersionNamesTheRelease(t *testing.T) {
	var out bytes.Buffer
	if rc := run([]string{"version"}, stdio{out: &out, err: &out}); rc != 0 {
		t.Fatalf("rc %d", rc)
	}
	if !strings.HasPrefix(out.String(), "jetrelay "+releaseVersion) || strings.Contains(out.String(), "(devel)") {
		t.Fatalf("version printed %q", out.String())
	}
}

func TestBuildDetails(t *testing.T) {
	cases := []struct {
		name     string
		settings []debug.BuildSetting
		want     string
	}{
		{"none (-buildvcs=false)", []debug.BuildSetting{{Key: "GOOS", Value: "linux"}}, ""},
		{"clean", []debug.BuildSetting{{Key: "vcs.revision", Value: "0123456789abcdef0123"},
			{Key: "vcs.time", Value: "2026-12-06T12:00:00Z"}, {Key: "vcs.modified", Value: "false"}},
			" (rev 0123456789ab, 2026-12-06T12:00:00Z)"},
		{"dirty", []debug.BuildSetting{{Key: "vcs.revision", Value: "abc"}, {Key: "vcs.modified", Value: "true"}},
			" (rev abc, modified)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := buildDetails(c.settings); got != c.want {
				t.Fatalf("got %q, want %q", got, c.want)
			}
		})
	}
}

func TestPlural(t *testing.T) {
	for n, want := range map[string]string{"1 domain": plural(1, "domain"), "2 domains": plural(2, "domain"),
		"0 entries": plural(0, "entry"), "1 entry": plural(1, "entry"), "3 problems": plural(3, "problem"),
		"2 records": plural(2, "record"), "4 keys": plural(4, "key")} {
		if n != want {
			t.Errorf("got %q, want %q", want, n)
		}
	}
}
