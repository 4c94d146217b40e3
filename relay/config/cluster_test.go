package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// secretFile writes a route secret with mode perm and returns its path.
func secretFile(t *testing.T, perm os.FileMode, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "cluster.password")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, perm); err != nil {
		t.Fatal(err)
	}
	return p
}

// clusterYAML is a config whose nats section has the given replicas and
// cluster block lines (indented under "  cluster:").
func clusterYAML(replicas int, block string) string {
	return fmt.Sprintf("hostname: relay.example.com\nnats:\n  listen: 127.0.0.1:4222\n  replicas: %d\n  cluster:\n%s",
		replicas, block)
}

func TestServerNameDefault(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct{ yaml, want string }{
		{"hostname: relay.example.com\nnats:\n  listen: 127.0.0.1:4301\n", host + "-4301"},
		{"hostname: relay.example.com\nnats:\n  listen: \"\"\n", host},
		{"hostname: relay.example.com\n", host + "-4222"},
		{"hostname: relay.example.com\nnats:\n  server_name: relay-a\n", "relay-a"},
	}
	for _, c := range cases {
		cfg, err := Parse([]byte(c.yaml))
		if err != nil {
			t.Fatalf("%q: %v", c.yaml, err)
		}
		if cfg.NATS.ServerName != c.want {
			t.Errorf("%q: server_name %q, want %q", c.yaml, cfg.NATS.ServerName, c.want)
		}
		if cfg.NATS.Cluster != nil {
			t.Errorf("%q: cluster %+v without a cluster block", c.yaml, cfg.NATS.Cluster)
		}
	}
	if _, err := Parse([]byte("hostname: x.example\nnats:\n  server_name: relay a\n")); err == nil ||
		!strings.Contains(err.Error(), "nats.server_name: must not contain spaces") {
		t.Fatalf("server name with a space: %v", err)
	}
}

func TestClusterValid(t *testing.T) {
	pw := secretFile(t, 0o640, "s3cret\n")
	y := clusterYAML(3, fmt.Sprintf("    listen: 127.0.0.1:6222\n"+
		"    routes: [nats://127.0.0.1:6222, nats://relay-b:6222, nats://relay-c:6222]\n"+
		"    password_file: %s\n", pw))
	cfg, err := Parse([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NATS.Cluster.Name != DefaultClusterName || cfg.NATS.Cluster.PasswordFile != pw {
		t.Fatalf("cluster %+v", cfg.NATS.Cluster)
	}
	if len(cfg.Warnings()) != 0 {
		t.Fatalf("warnings %v", cfg.Warnings())
	}
}

// TestClusterProblems: each rule of the cluster block, with its line.
func TestClusterProblems(t *testing.T) {
	good := secretFile(t, 0o600, "s3cret\n")
	open := secretFile(t, 0o644, "s3cret\n")
	empty := secretFile(t, 0o600, "\n")
	routes3 := "    routes: [nats://relay-b:6222, nats://relay-c:6222]\n"
	cases := []struct{ name, yaml, want string }{
		{"with nats.url", "hostname: x.example\nnats:\n  url: nats://n1:4222\n  cluster:\n    listen: :6222\n",
			"line 4: nats.cluster: is for the embedded server"},
		{"too few routes", clusterYAML(3, "    listen: :6222\n    routes: [nats://relay-b:6222]\n    password_file: "+good+"\n"),
			"line 7: nats.cluster.routes: names 1 other node(s); nats.replicas: 3 needs at least 2"},
		{"own route does not count", clusterYAML(3, "    listen: 127.0.0.1:6222\n"+
			"    routes: [nats://127.0.0.1:6222, nats://localhost:6222, nats://127.0.0.1:6223]\n    password_file: "+good+"\n"),
			"nats.cluster.routes: names 1 other node(s)"},
		{"duplicate routes count once", clusterYAML(3, "    listen: :6222\n"+
			"    routes: [nats://relay-b:6222, nats://RELAY-B:6222]\n    password_file: "+good+"\n"),
			"nats.cluster.routes: names 1 other node(s)"},
		{"replicas above the nodes named", clusterYAML(5, "    listen: :6222\n"+routes3+"    password_file: "+good+"\n"),
			"(5 replicas are more than the 3 node(s) named, with this one)"},
		{"standalone replicas", "hostname: x.example\nnats:\n  replicas: 3\n",
			"line 3: nats.replicas: 3 replicas need 3 nodes, but the embedded server without nats.cluster is one node"},
		{"no password file", clusterYAML(3, "    listen: :6222\n"+routes3),
			"nats.cluster.password_file: required"},
		{"missing password file", clusterYAML(3, "    listen: :6222\n"+routes3+"    password_file: /nonexistent/pw\n"),
			"line 8: nats.cluster.password_file: file /nonexistent/pw does not exist"},
		{"world-readable password file", clusterYAML(3, "    listen: :6222\n"+routes3+"    password_file: "+open+"\n"),
			"is readable by every user (mode 0644)"},
		{"empty password file", clusterYAML(3, "    listen: :6222\n"+routes3+"    password_file: "+empty+"\n"),
			"is empty"},
		{"no listen", clusterYAML(3, routes3+"    password_file: "+good+"\n"),
			"nats.cluster.listen: required"},
		{"route port is the client port", clusterYAML(3, "    listen: 0.0.0.0:4222\n"+routes3+"    password_file: "+good+"\n"),
			`line 6: nats.cluster.listen: "0.0.0.0:4222" overlaps nats.listen "127.0.0.1:4222"`},
		{"random route port", clusterYAML(3, "    listen: 127.0.0.1:0\n"+routes3+"    password_file: "+good+"\n"),
			"line 6: nats.cluster.listen: needs a fixed port"},
		{"bad route", clusterYAML(1, "    listen: :6222\n    routes: [relay-b:6222]\n    password_file: "+good+"\n"),
			`nats.cluster.routes[0]: "relay-b:6222" is not a route URL`},
		{"route without port", clusterYAML(1, "    listen: :6222\n    routes: [nats://relay-b]\n    password_file: "+good+"\n"),
			"nats.cluster.routes[0]: \"nats://relay-b\" needs a port"},
		{"route with credentials", clusterYAML(1, "    listen: :6222\n    routes: [\"nats://u:p@relay-b:6222\"]\n    password_file: "+good+"\n"),
			"nats.cluster.routes[0]: must not hold credentials"},
		{"tls cert without key", clusterYAML(1, "    listen: :6222\n    password_file: "+good+"\n    tls: {cert: "+good+"}\n"),
			"nats.cluster.tls: set both cert and key"},
		{"tls ca without cert", clusterYAML(1, "    listen: :6222\n    password_file: "+good+"\n    tls: {ca_file: "+good+"}\n"),
			"nats.cluster.tls.ca_file: needs cert and key"},
		{"tls missing file", clusterYAML(1, "    listen: :6222\n    password_file: "+good+"\n    tls: {cert: /nonexistent/c, key: "+good+"}\n"),
			"nats.cluster.tls.cert: file /nonexistent/c does not exist"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.yaml))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v\nwant it to contain %q", err, c.want)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Fatalf("error shows the secret: %v", err)
			}
		})
	}
}

// TestSyncWarningWithExternalNATS: nats.sync cannot apply to external
// servers; saying so is a warning, and only when sync is set otherwise
// than the default.
func TestSyncWarningWithExternalNATS(t *testing.T) {
	cases := []struct {
		yaml string
		warn bool
	}{
		{"hostname: x.example\nnats:\n  url: nats://n1:4222\n  sync: 2m\n", true},
		{"hostname: x.example\nnats:\n  url: nats://n1:4222\n  sync: always\n", false},
		{"hostname: x.example\nnats:\n  url: nats://n1:4222\n", false},
		{"hostname: x.example\nnats:\n  sync: 2m\n", false},
	}
	for _, c := range cases {
		cfg, err := Parse([]byte(c.yaml))
		if err != nil {
			t.Fatalf("%q: %v", c.yaml, err)
		}
		var got []string
		for _, w := range cfg.Warnings() {
			got = append(got, w.Error())
		}
		has := len(got) == 1 && strings.Contains(got[0], "line 4: nats.sync: is the embedded server's setting")
		if has != c.warn || (!c.warn && len(got) != 0) {
			t.Errorf("%q: warnings %q, want a nats.sync warning: %v", c.yaml, got, c.warn)
		}
	}
}

// TestClusterFilesRelativeToConfig: the route secret and TLS files may be
// named relative to the config file, like the other files.
func TestClusterFilesRelativeToConfig(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "cluster.password"), []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "jetrelay.yaml")
	y := clusterYAML(1, "    listen: :6222\n    password_file: cluster.password\n")
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "cluster.password"); cfg.NATS.Cluster.PasswordFile != want {
		t.Fatalf("password_file %q, want %q", cfg.NATS.Cluster.PasswordFile, want)
	}
}
