package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckReloadDiff: `check --reload-diff OLD NEW` lists the changed
// settings by reload class (the table the running relay uses), says when
// nothing changed, refuses an invalid NEW with its problems, and needs
// exactly two files.
func TestCheckReloadDiff(t *testing.T) {
	dir := t.TempDir()
	write := func(name, yaml string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	base := "hostname: relay.test\ndata_dir: " + dir + "\n"
	old := write("old.yaml", base+"delivery:\n  dns: {servers: [\"127.0.0.1:53\"]}\n")
	next := write("new.yaml", base+
		"nats: {listen: \"127.0.0.1:4333\"}\n"+
		"delivery:\n  dns: {servers: [\"127.0.0.1:5353\"]}\n  port: 2525\n  retry: {max_age: 72h}\n"+
		"bounces: {verp_domain: bounces.relay.test}\n"+
		"submission:\n  listeners: [{addr: \"127.0.0.1:2587\", tls: starttls}]\n")
	bad := write("bad.yaml", base+"delivery:\n  port: many\n")

	cases := []struct {
		name   string
		args   []string
		rc     int
		stdout string
		says   string
	}{
		{"changes", []string{old, next}, 0, "applied by a reload (SIGHUP):\n" +
			"  bounces.verp_domain\n  delivery.dns.servers\n  delivery.port\n  delivery.retry.max_age\n" +
			"need a restart (a reload keeps the running value):\n  nats.listen\n  nats.server_name\n  submission.listeners\n", ""},
		{"same", []string{old, old}, 0, "no settings changed\n", ""},
		{"invalid new", []string{old, bad}, 1, "", "a reload would refuse"},
		{"one file", []string{old}, 2, "", "needs two files"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			args := append([]string{"check", "--reload-diff"}, tc.args...)
			rc := run(args, stdio{strings.NewReader(""), &out, &errb})
			if rc != tc.rc {
				t.Fatalf("rc=%d, want %d\n%s%s", rc, tc.rc, out.String(), errb.String())
			}
			if tc.stdout != "" && out.String() != tc.stdout {
				t.Errorf("stdout:\n%s\nwant:\n%s", out.String(), tc.stdout)
			}
			if tc.says != "" && !strings.Contains(out.String()+errb.String(), tc.says) {
				t.Errorf("output lacks %q:\n%s%s", tc.says, out.String(), errb.String())
			}
		})
	}
}
