package clustertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/relay/devtools/testport"
	"golang.org/x/crypto/bcrypt"
)

// Options describe a local cluster.
type Options struct {
	Bin      string // the jetrelay binary
	Dir      string // working directory (one sub-directory per node)
	Nodes    int    // number of jetrelay processes (default 3)
	Replicas int    // nats.replicas (default 3)
	SinkAddr string // loopback host:port every message is routed to
	// ExternalURL, when set, is nats.url: the nodes use that NATS cluster
	// instead of clustering their embedded servers.
	ExternalURL string
	User, Pass  string // the submission user (allowed_from example.com)
	LogLevel    string // relay log level (default "info")
}

// Cluster is a set of nodes sharing one JetStream cluster.
type Cluster struct {
	Opts  Options
	Nodes []*Node
}

// DeliveryConns is each node's delivery.max_connections: with the lease
// prefetch it bounds what a node has in flight when it dies.
const DeliveryConns = 16

// names of the nodes, in order.
var nodeNames = []string{"relay-a", "relay-b", "relay-c", "relay-d", "relay-e"}

// New writes the configs and the route secret; nothing is started.
func New(o Options) (*Cluster, error) {
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	if o.Replicas == 0 {
		o.Replicas = 3
	}
	if o.LogLevel == "" {
		o.LogLevel = "info"
	}
	if o.Nodes > len(nodeNames) {
		return nil, fmt.Errorf("at most %d nodes", len(nodeNames))
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(o.Pass), bcrypt.MinCost)
	if err != nil {
		return nil, err
	}
	secret := filepath.Join(o.Dir, "cluster.password")
	if err := os.WriteFile(secret, []byte(randomHex(24)+"\n"), 0o600); err != nil {
		return nil, err
	}
	c := &Cluster{Opts: o}
	ports := portPicker{}
	for i := 0; i < o.Nodes; i++ {
		n := &Node{Name: nodeNames[i], Dir: filepath.Join(o.Dir, nodeNames[i]), bin: o.Bin}
		n.ConfigPath = filepath.Join(n.Dir, "jetrelay.yaml")
		n.SubmitAddr, n.AdminAddr = ports.addr(), ports.addr()
		if o.ExternalURL == "" {
			n.ClientAddr, n.RouteAddr = ports.addr(), ports.addr()
		}
		if err := os.MkdirAll(filepath.Join(n.Dir, "data"), 0o700); err != nil {
			return nil, err
		}
		c.Nodes = append(c.Nodes, n)
	}
	for _, n := range c.Nodes {
		if err := os.WriteFile(n.ConfigPath, []byte(c.config(n, string(hash), secret)), 0o600); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// config is one node's jetrelay.yaml.
func (c *Cluster) config(n *Node, hash, secret string) string {
	natsBlock := fmt.Sprintf("nats:\n  url: %q\n  replicas: %d\n", c.Opts.ExternalURL, c.Opts.Replicas)
	if c.Opts.ExternalURL == "" {
		var routes []string
		for _, o := range c.Nodes {
			routes = append(routes, "nats://"+o.RouteAddr)
		}
		natsBlock = fmt.Sprintf(`nats:
  server_name: %s
  listen: %q
  replicas: %d
  cluster:
    name: jetrelay
    listen: %q
    routes: [%s]
    password_file: %q
`, n.Name, n.ClientAddr, c.Opts.Replicas, n.RouteAddr, strings.Join(routes, ", "), secret)
	}
	return fmt.Sprintf(`hostname: %s.cluster.test
data_dir: %q
%ssubmission:
  listeners: [{addr: %q, tls: starttls}]
  users: [{name: %s, password_hash: %q, allowed_from: [example.com]}]
delivery:
  dns: {servers: ["127.0.0.1:9"]}
  routes: [{domains: ["*"], host: %q, tls: none}]
  max_connections: %d
admin: {listen: %q}
log: {level: %s}
`, n.Name, filepath.Join(n.Dir, "data"), natsBlock, n.SubmitAddr, c.Opts.User, hash,
		c.Opts.SinkAddr, DeliveryConns, n.AdminAddr, c.Opts.LogLevel)
}

// Start starts every node that is not running.
func (c *Cluster) Start() error {
	for _, n := range c.Nodes {
		if n.Pid() != 0 {
			continue
		}
		if err := n.Start(); err != nil {
			return err
		}
	}
	return nil
}

// Stop stops every node with SIGTERM (killing what is not gone after grace).
func (c *Cluster) Stop(grace time.Duration) {
	for _, n := range c.Nodes {
		_ = n.Stop(grace)
	}
}

// Close kills every node.
func (c *Cluster) Close() {
	for _, n := range c.Nodes {
		_ = n.Kill()
	}
}

// WaitReady polls /readyz of the nodes until each answers 200; a node
// whose process exits on its own is an error.
func (c *Cluster) WaitReady(ctx context.Context, nodes ...*Node) error {
	if len(nodes) == 0 {
		nodes = c.Nodes
	}
	for _, n := range nodes {
		for n.Ready(ctx) != 200 {
			if n.Exited() {
				return fmt.Errorf("%s exited:\n%s", n.Name, n.LogTail(4000))
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s not ready: %w\n%s", n.Name, ctx.Err(), n.LogTail(4000))
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

// Running returns the nodes whose process runs.
func (c *Cluster) Running() []*Node {
	var out []*Node
	for _, n := range c.Nodes {
		if n.Pid() != 0 {
			out = append(out, n)
		}
	}
	return out
}

// Node returns the node with this server name, nil if none.
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// portPicker hands out loopback addresses reserved with testport (below
// the kernel's ephemeral range, locked against other processes) for the
// rest of the process: nodes restart on their ports until it ends.
type portPicker map[string]bool

func (p portPicker) addr() string {
	for range 100 {
		port, _, err := testport.Reserve()
		if err != nil {
			break
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		if !p[addr] {
			p[addr] = true
			return addr
		}
	}
	return "127.0.0.1:1" // a start on it fails loudly
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
