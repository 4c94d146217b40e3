package main

import (
	"bufio"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jetrelay/jetrelay/relay/config"
)

const (
	packagedConfig = "/etc/jetrelay/jetrelay.yaml"
	packagedBinary = "/usr/bin/jetrelay"
)

// unitExecLines returns the unit's values of key (ExecStart, ...).
func unitExecLines(t *testing.T, key string) []string {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "packaging", "jetrelay.service"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), key+"="); ok {
			out = append(out, v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestPackagedConfigPassesCheck: the .deb's /etc/jetrelay/jetrelay.yaml
// passes `jetrelay check` with no problem or warning, is production-shaped
// (data under /var/lib/jetrelay, ops ports on loopback, no user with a
// known password), and every command line of the unit runs with it.
func TestPackagedConfigPassesCheck(t *testing.T) {
	path := filepath.Join("..", "..", "packaging", "jetrelay.yaml")
	rc, out, errOut := runCmd(t, "check", "--config", path)
	// hostname is left to the machine's name on purpose; on a machine
	// whose name is not fully qualified check warns about that, and only that.
	var other []string
	for _, l := range strings.SplitAfter(out, "\n") {
		if l != "" && !strings.HasPrefix(l, path+": warning: hostname: not set,") {
			other = append(other, l)
		}
	}
	if rc != 0 || strings.Join(other, "") != path+": OK\n" {
		t.Fatalf("jetrelay check: rc=%d\n%s%s", rc, out, errOut)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DataDir != "/var/lib/jetrelay" {
		t.Errorf("data_dir %q, want the unit's StateDirectory /var/lib/jetrelay", cfg.DataDir)
	}
	if len(cfg.Submission.Users) != 0 {
		t.Errorf("the package must not ship a user (its password would be known): %d users", len(cfg.Submission.Users))
	}
	for key, addr := range map[string]string{"nats.listen": cfg.NATS.Listen, "admin.listen": cfg.Admin.Listen} {
		host, _, err := net.SplitHostPort(addr)
		if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
			t.Errorf("%s %q is not a loopback address", key, addr)
		}
	}
	// The unit's check lines, with the packaged config swapped for this one.
	for _, key := range []string{"ExecStartPre", "ExecReload"} {
		for _, line := range unitExecLines(t, key) {
			args := strings.Fields(strings.ReplaceAll(line, packagedConfig, path))
			if args[0] != packagedBinary {
				continue // /bin/kill -HUP $MAINPID
			}
			if rc, out, errOut := runCmd(t, args[1:]...); rc != 0 {
				t.Errorf("%s=%s: rc=%d\n%s%s", key, line, rc, out, errOut)
			}
		}
	}
}

// TestUnitCommandLines: ExecStart is serve with the packaged config, flags
// the serve command has; ExecReload ends with SIGHUP to the main process.
func TestUnitCommandLines(t *testing.T) {
	start := unitExecLines(t, "ExecStart")
	if want := packagedBinary + " serve --config " + packagedConfig; len(start) != 1 || start[0] != want {
		t.Fatalf("ExecStart=%q, want %q", start, want)
	}
	// serve --help lists the flag the unit passes (a renamed flag fails here).
	if rc, out, _ := runCmd(t, "serve", "--help"); rc != 0 || !strings.Contains(out, "-config") {
		t.Errorf("serve --help: rc=%d, no -config:\n%s", rc, out)
	}
	reload := unitExecLines(t, "ExecReload")
	if len(reload) == 0 || reload[len(reload)-1] != "/bin/kill -HUP $MAINPID" {
		t.Errorf("ExecReload=%q, want the last to be /bin/kill -HUP $MAINPID (serve reloads on SIGHUP)", reload)
	}
	for _, key := range []string{"User", "AmbientCapabilities", "NoNewPrivileges", "ProtectSystem", "ReadWritePaths"} {
		if len(unitExecLines(t, key)) == 0 {
			t.Errorf("the unit has no %s=", key)
		}
	}
}
