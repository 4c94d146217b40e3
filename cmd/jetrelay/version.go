package main

import (
	"fmt"
	"runtime/debug"
	"strings"
)

// releaseVersion is this release's version, kept in the code so every
// build (go build, go install, -buildvcs=false) names it. Bump it when
// releasing.
const releaseVersion = "0.2.0"

// version overrides releaseVersion when set with
// -ldflags "-X main.version=..." (a packager's own version string).
var version = ""

// revLen is how much of the VCS revision is printed.
const revLen = 12

// versionString is the release version, then what the build carries of
// its source: the VCS revision, its commit time and "modified" for a
// dirty tree (debug.ReadBuildInfo; absent with -buildvcs=false).
func versionString() string {
	v := releaseVersion
	if version != "" {
		v = version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	return v + buildDetails(bi.Settings)
}

// buildDetails formats the vcs.* build settings: " (rev 0123456789ab,
// 2026-12-06T12:00:00Z, modified)", or "" when there are none.
func buildDetails(settings []debug.BuildSetting) string {
	var rev, at, dirty string
	for _, s := range settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
			if len(rev) > revLen {
				rev = rev[:revLen]
			}
		case "vcs.time":
			at = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "modified"
			}
		}
	}
	var parts []string
	if rev != "" {
		parts = append(parts, "rev "+rev)
	}
	for _, p := range []string{at, dirty} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

func runVersion(args []string, io stdio) int {
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
		fmt.Fprintln(io.out, "Usage: jetrelay version\n\n"+
			"Prints the jetrelay release version, the source revision and its time when\n"+
			"the build carries them, and the crypto it was built with (go, or\n"+
			"boringcrypto from scripts/build).")
		return 0
	}
	fmt.Fprintf(io.out, "jetrelay %s (crypto: %s)\n", versionString(), cryptoBackend)
	return 0
}
