package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckCluster: `jetrelay check` accepts a three-node cluster block,
// refuses too few routes for the replicas and a world-readable route
// secret (exit 1), and warns (exit 0) about nats.sync with external NATS.
func TestCheckCluster(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "cluster.password")
	if err := os.WriteFile(secret, []byte("route-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	write := func(name, yaml string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cluster := func(routes string) string {
		return "hostname: relay.example.com\nnats:\n  replicas: 3\n  cluster:\n    listen: 0.0.0.0:6222\n" +
			"    routes: [" + routes + "]\n    password_file: " + secret + "\n"
	}
	cases := []struct {
		name, yaml string
		rc         int
		want       string
	}{
		{"three nodes", cluster("nats://relay-a:6222, nats://relay-b:6222, nats://relay-c:6222"), 0, ": OK"},
		{"two nodes named", cluster("nats://relay-b:6222"), 1,
			"line 6: nats.cluster.routes: names 1 other node(s); nats.replicas: 3 needs at least 2"},
		{"external sync", "hostname: relay.example.com\nnats:\n  url: nats://127.0.0.1:4222\n  sync: 1s\n", 0,
			"warning: line 4: nats.sync: is the embedded server's setting and has no effect with nats.url"},
	}
	for _, c := range cases {
		var out, errb bytes.Buffer
		rc := run([]string{"check", "--config", write(c.name+".yaml", c.yaml)}, stdio{nil, &out, &errb})
		if rc != c.rc || !strings.Contains(out.String(), c.want) {
			t.Errorf("%s: rc=%d, want %d and %q:\n%s%s", c.name, rc, c.rc, c.want, out.String(), errb.String())
		}
	}
	if err := os.Chmod(secret, 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	rc := run([]string{"check", "--config", write("open.yaml", cluster("nats://relay-b:6222, nats://relay-c:6222"))},
		stdio{nil, &out, &out})
	if rc != 1 || !strings.Contains(out.String(), "nats.cluster.password_file: file "+secret+" is readable by every user") {
		t.Fatalf("world-readable secret: rc=%d\n%s", rc, out.String())
	}
}
