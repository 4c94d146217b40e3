package config

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
)

// NATSCluster makes the embedded NATS server one node of a JetStream
// cluster: it listens for routes from the other nodes and connects to
// theirs. Every node names the others in routes and shares one route
// secret; streams are then created with nats.replicas copies.
type NATSCluster struct {
	// Name is the cluster's name, the same on every node.
	Name string `yaml:"name"`
	// Listen is this node's route address (host:port), where the other
	// nodes connect; open it to them only.
	Listen string `yaml:"listen"`
	// Routes are the nodes' route URLs (nats://host:port); this node's own
	// address may be among them (it is ignored), so every node can share
	// one list.
	Routes []string `yaml:"routes"`
	// PasswordFile holds the shared route secret (the same file on every
	// node, not readable by others: mode 0600 or 0640).
	PasswordFile string `yaml:"password_file"`
	// TLS encrypts the routes; with ca_file the nodes verify each other's
	// certificates (mutual TLS).
	TLS ClusterTLS `yaml:"tls"`
}

// ClusterTLS are the certificate, key and CA of TLS between cluster nodes.
type ClusterTLS struct {
	// Cert is this node's certificate chain (PEM), for its route port and
	// presented as a client: with ca_file it needs both server and client
	// authentication (extended key usage) and the names or addresses the
	// routes use.
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"` // Key is the certificate's private key (PEM)
	// CAFile verifies the other nodes' certificates in both directions
	// (mutual TLS); "" = system roots, no client certificate required.
	CAFile string `yaml:"ca_file"`
}

// resolvePaths applies Config.resolvePaths's fix to the block's files.
func (cl *NATSCluster) resolvePaths(fix func(*string)) {
	if cl == nil {
		return
	}
	for _, p := range []*string{&cl.PasswordFile, &cl.TLS.Cert, &cl.TLS.Key, &cl.TLS.CAFile} {
		fix(p)
	}
}

// DefaultClusterName is nats.cluster.name when the block leaves it out.
const DefaultClusterName = "jetrelay"

// defaultServerName is nats.server_name's default: the machine's host
// name, with the client port of nats.listen when there is one, so that
// nodes on one machine differ.
func defaultServerName(listen string) string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	host = strings.ReplaceAll(host, " ", "-")
	if _, port, err := net.SplitHostPort(listen); err == nil && port != "" && port != "0" {
		return host + "-" + port
	}
	return host
}

// applyClusterDefaults fills nats.server_name and nats.cluster.name.
func (c *Config) applyClusterDefaults() {
	if c.NATS.ServerName == "" {
		c.NATS.ServerName = defaultServerName(c.NATS.Listen)
	}
	if cl := c.NATS.Cluster; cl != nil && cl.Name == "" {
		cl.Name = DefaultClusterName
	}
}

// validateCluster checks nats.server_name, nats.cluster and that
// nats.replicas fits the nodes the embedded server knows of.
func (c *Config) validateCluster(ps *problems) {
	n := c.NATS
	if strings.ContainsAny(n.ServerName, " \t\r\n") {
		ps.add("nats.server_name", "must not contain spaces")
	}
	cl := n.Cluster
	if cl == nil {
		if n.URL == "" && n.Replicas > 1 {
			ps.add("nats.replicas", "%d replicas need %d nodes, but the embedded server without "+
				"nats.cluster is one node: set nats.replicas: 1 or add a nats.cluster block", n.Replicas, n.Replicas)
		}
		return
	}
	if n.URL != "" {
		ps.add("nats.cluster", "is for the embedded server; with nats.url the external NATS servers "+
			"form the cluster (remove one of them)")
		return
	}
	if strings.ContainsAny(cl.Name, " \t\r\n.*>") {
		ps.add("nats.cluster.name", "must not contain spaces, dots or wildcards")
	}
	if cl.Listen == "" {
		ps.add("nats.cluster.listen", "required: this node's route address, such as 0.0.0.0:6222")
	} else if _, port, err := net.SplitHostPort(cl.Listen); err == nil && port == "0" {
		ps.add("nats.cluster.listen", "needs a fixed port: the other nodes' routes name it")
	} else {
		checkAddr(ps, "nats.cluster.listen", cl.Listen)
		if samePort(cl.Listen, n.Listen) {
			ps.add("nats.cluster.listen", "%q overlaps nats.listen %q: the route port needs a port of its own",
				cl.Listen, n.Listen)
		}
	}
	others := c.checkRoutes(ps, cl)
	if others < n.Replicas-1 {
		ps.add("nats.cluster.routes", "names %d other node(s); nats.replicas: %d needs at least %d "+
			"(%d replicas are more than the %d node(s) named, with this one)",
			others, n.Replicas, n.Replicas-1, n.Replicas, others+1)
	}
	checkSecretFile(ps, "nats.cluster.password_file", cl.PasswordFile)
	checkClusterTLS(ps, cl.TLS)
}

// checkRoutes checks each route URL and returns how many distinct nodes
// other than this one they name.
func (c *Config) checkRoutes(ps *problems, cl *NATSCluster) int {
	seen := map[string]bool{}
	for i, r := range cl.Routes {
		p := fmt.Sprintf("nats.cluster.routes[%d]", i)
		u, err := url.Parse(r)
		if err != nil || (u.Scheme != "nats" && u.Scheme != "nats-route") || u.Host == "" {
			ps.add(p, "%q is not a route URL such as nats://relay-b:6222", r)
			continue
		}
		if u.User != nil {
			ps.add(p, "must not hold credentials: the route secret is read from nats.cluster.password_file")
			continue
		}
		host, port, err := net.SplitHostPort(u.Host)
		if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 1 || n > 65535 {
			ps.add(p, "%q needs a port, such as nats://relay-b:6222", r)
			continue
		}
		if isSelfRoute(host, port, cl.Listen) {
			continue
		}
		seen[strings.ToLower(net.JoinHostPort(host, port))] = true
	}
	return len(seen)
}

// samePort reports whether listen addresses a and b would bind the same
// port (one port, and one host or a wildcard).
func samePort(a, b string) bool {
	ah, ap, err1 := net.SplitHostPort(a)
	bh, bp, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil || ap != bp || ap == "0" {
		return false
	}
	wild := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	return ah == bh || wild(ah) || wild(bh)
}

// isSelfRoute reports whether host:port is this node's own route address:
// the route port of cluster.listen on a name or address of this machine
// (the listen host, the host name, localhost, a local interface address).
// Names are not resolved: a route through some other name counts as
// another node, as it would if it were one.
func isSelfRoute(host, port, listen string) bool {
	lhost, lport, err := net.SplitHostPort(listen)
	if err != nil || lport != port {
		return false
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if host == strings.ToLower(lhost) || host == "localhost" {
		return true
	}
	if name, err := os.Hostname(); err == nil && strings.EqualFold(host, name) {
		return true
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return false
	}
	if ip.IsLoopback() {
		return true
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
			return true
		}
	}
	return false
}

// checkSecretFile requires a secret file that exists, is not empty and
// that other users cannot read.
func checkSecretFile(ps *problems, path, file string) {
	if file == "" {
		ps.add(path, "required: a file holding the route secret shared by all nodes "+
			"(e.g. openssl rand -hex 32 > cluster.password; chmod 600 cluster.password)")
		return
	}
	st, err := os.Stat(file)
	if err != nil {
		ps.add(path, "file %s does not exist", file)
		return
	}
	if st.Mode().Perm()&0o004 != 0 {
		ps.add(path, "file %s is readable by every user (mode %#o): chmod o-r %s", file, st.Mode().Perm(), file)
	}
	b, err := os.ReadFile(file)
	switch {
	case err != nil:
		ps.add(path, "%v", err)
	case strings.TrimSpace(string(b)) == "":
		ps.add(path, "file %s is empty", file)
	}
}

// checkClusterTLS checks nats.cluster.tls: cert and key together, files
// that exist, and a CA only with a certificate.
func checkClusterTLS(ps *problems, t ClusterTLS) {
	if (t.Cert == "") != (t.Key == "") {
		ps.add("nats.cluster.tls", "set both cert and key, or neither (routes without TLS)")
	}
	if t.CAFile != "" && t.Cert == "" {
		ps.add("nats.cluster.tls.ca_file", "needs cert and key: the nodes verify each other's certificates")
	}
	files := []struct{ path, file string }{
		{"nats.cluster.tls.cert", t.Cert}, {"nats.cluster.tls.key", t.Key}, {"nats.cluster.tls.ca_file", t.CAFile},
	}
	for _, f := range files {
		if f.file != "" && !fileExists(f.file) {
			ps.add(f.path, "file %s does not exist", f.file)
		}
	}
}

// syncWarning warns that nats.sync cannot apply to external NATS servers.
func (c *Config) syncWarning() []Problem {
	s := strings.TrimSpace(c.NATS.Sync)
	if c.NATS.URL == "" || s == "" || s == "always" || !c.has("nats", "sync") {
		return nil
	}
	return []Problem{{Path: "nats.sync", Line: c.Line("nats", "sync"),
		Msg: "is the embedded server's setting and has no effect with nats.url: durability is the " +
			"external NATS servers' own sync_interval (their jetstream block)"}}
}
