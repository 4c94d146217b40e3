// Package clusterviewtest runs a real in-process JetStream cluster on
// loopback for tests: n embedded nats-servers with routes to each other,
// the embedded server's users (queue.EmbeddedAuth), and a temp store each.
// Nodes can be stopped and restarted (same name, store and ports) to take
// replicas or quorum away and give them back.
package clusterviewtest

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/devtools/testport"
	"github.com/nats-io/nats-server/v2/server"
)

// Password is every node's password for queue.EmbeddedUser and queue.SystemUser.
const Password = "clusterviewtest-secret"

// ClusterName is the test cluster's name.
const ClusterName = "jetrelay-test"

// startTimeout bounds one server's start.
const startTimeout = 30 * time.Second

// Cluster is a running test cluster.
type Cluster struct {
	t     testing.TB
	Nodes []*Node
}

// Node is one server of the cluster.
type Node struct {
	Name        string
	store       string
	port        int // client port
	clusterPort int
	routes      []string
	Server      *server.Server // nil while stopped
}

// Run starts an n-node cluster (node names n1..nN) and waits until
// JetStream has a meta leader. Everything is shut down at test end.
func Run(t testing.TB, n int) *Cluster {
	t.Helper()
	var lastErr error
	for range 5 {
		c, err := start(t, n)
		if err == nil {
			t.Cleanup(c.stopAll)
			c.WaitMetaLeader()
			return c
		}
		lastErr = err
	}
	t.Fatalf("start %d-node cluster: %v", n, lastErr)
	return nil
}

// start picks free ports and starts every node; a port taken in between
// fails the start (Run retries with new ports).
func start(t testing.TB, n int) (*Cluster, error) {
	ports := testport.Ports(t, 2*n)
	c := &Cluster{t: t}
	var routes []string
	for i := range n {
		routes = append(routes, "nats://127.0.0.1:"+strconv.Itoa(ports[n+i]))
	}
	dir := t.TempDir()
	for i := range n {
		c.Nodes = append(c.Nodes, &Node{
			Name: "n" + strconv.Itoa(i+1), store: filepath.Join(dir, strconv.Itoa(i+1)),
			port: ports[i], clusterPort: ports[n+i], routes: routes,
		})
	}
	for _, nd := range c.Nodes {
		if err := nd.start(); err != nil {
			c.stopAll()
			return nil, err
		}
	}
	return c, nil
}

// Options returns the node's server options.
func (nd *Node) Options() *server.Options {
	so := &server.Options{
		ServerName: nd.Name,
		Host:       "127.0.0.1",
		Port:       nd.port,
		JetStream:  true,
		StoreDir:   nd.store,
		NoSigs:     true,
		NoLog:      true,
		Cluster: server.ClusterOpts{
			Name: ClusterName, Host: "127.0.0.1", Port: nd.clusterPort,
		},
		Routes: server.RoutesFromStr(strings.Join(nd.routes, ",")),
	}
	queue.EmbeddedAuth(so, Password)
	return so
}

func (nd *Node) start() error {
	ns, err := server.NewServer(nd.Options())
	if err != nil {
		return err
	}
	go ns.Start()
	if !ns.ReadyForConnections(startTimeout) || ns.ClusterAddr() == nil {
		ns.Shutdown()
		ns.WaitForShutdown()
		return fmt.Errorf("node %s did not start (ports %d/%d taken?)", nd.Name, nd.port, nd.clusterPort)
	}
	nd.Server = ns
	return nil
}

// URL is the node's client URL.
func (nd *Node) URL() string { return "nats://127.0.0.1:" + strconv.Itoa(nd.port) }

// ClusterAddr is the node's route address (host:port).
func (nd *Node) ClusterAddr() string { return "127.0.0.1:" + strconv.Itoa(nd.clusterPort) }

// Stop shuts node i down (its store stays).
func (c *Cluster) Stop(i int) {
	c.t.Helper()
	nd := c.Nodes[i]
	if nd.Server == nil {
		return
	}
	nd.Server.Shutdown()
	nd.Server.WaitForShutdown()
	nd.Server = nil
}

// Restart starts a stopped node i again with the same name, store and ports.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	nd := c.Nodes[i]
	if nd.Server != nil {
		return
	}
	deadline := time.Now().Add(startTimeout)
	for {
		err := nd.start()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("restart %s: %v", nd.Name, err)
		}
		time.Sleep(100 * time.Millisecond) // the old listener may still be closing
	}
}

func (c *Cluster) stopAll() {
	for i := range c.Nodes {
		c.Stop(i)
	}
}

// WaitMetaLeader waits until every running node knows a JetStream meta
// leader.
func (c *Cluster) WaitMetaLeader() {
	c.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ok := true
		for _, nd := range c.Nodes {
			if nd.Server != nil && !nd.Server.JetStreamIsCurrent() {
				ok = false
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatal("timed out waiting for a JetStream meta leader")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
