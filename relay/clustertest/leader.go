package clustertest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// StreamLeader asks a running node's JetStream for the server name that
// leads the queue stream ("" with an error while there is none).
func (c *Cluster) StreamLeader(ctx context.Context) (string, error) {
	var lastErr error = errors.New("no node is running")
	for _, n := range c.Running() {
		leader, err := c.leaderVia(ctx, n)
		if err == nil && leader != "" {
			return leader, nil
		}
		if err == nil {
			err = errors.New("the queue stream has no leader")
		}
		lastErr = err
	}
	return "", lastErr
}

func (c *Cluster) leaderVia(ctx context.Context, n *Node) (string, error) {
	nc, err := c.connect(n)
	if err != nil {
		return "", err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, queue.StreamName)
	if err != nil {
		return "", err
	}
	info := s.CachedInfo()
	if info.Cluster == nil {
		return "", errors.New("the queue stream has no cluster info")
	}
	return info.Cluster.Leader, nil
}

// connect dials a node's NATS client port with the embedded server's
// user and password (data_dir/nats.password), or the external URL.
func (c *Cluster) connect(n *Node) (*nats.Conn, error) {
	if c.Opts.ExternalURL != "" {
		return nats.Connect(c.Opts.ExternalURL, nats.Timeout(5*time.Second), nats.MaxReconnects(0))
	}
	pass, err := os.ReadFile(filepath.Join(n.Dir, "data", queue.PasswordFileName))
	if err != nil {
		return nil, err
	}
	return nats.Connect("nats://"+n.ClientAddr, nats.UserInfo(queue.EmbeddedUser, strings.TrimSpace(string(pass))),
		nats.Timeout(5*time.Second), nats.MaxReconnects(0))
}

// ReplicasCurrent reports whether the queue stream has a leader and every
// other node's replica is current (caught up), with a description.
func (c *Cluster) ReplicasCurrent(ctx context.Context) (bool, string) {
	for _, n := range c.Running() {
		nc, err := c.connect(n)
		if err != nil {
			continue
		}
		ok, desc := replicasCurrent(ctx, nc, c.Opts.Replicas)
		nc.Close()
		return ok, desc
	}
	return false, "no node is running"
}

func replicasCurrent(ctx context.Context, nc *nats.Conn, replicas int) (bool, string) {
	js, err := jetstream.New(nc)
	if err != nil {
		return false, err.Error()
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, queue.StreamName)
	if err != nil {
		return false, err.Error()
	}
	ci := s.CachedInfo().Cluster
	if ci == nil || ci.Leader == "" {
		return false, "no leader"
	}
	desc := "leader " + ci.Leader
	ok := len(ci.Replicas) == replicas-1
	for _, r := range ci.Replicas {
		desc += fmt.Sprintf(", %s current=%v lag=%d", r.Name, r.Current, r.Lag)
		ok = ok && r.Current && !r.Offline
	}
	return ok, desc
}

// Status is the part of `jetrelay cluster status --json` the harness reads.
type Status struct {
	Nodes []struct {
		Name string `json:"name"`
		Up   bool   `json:"up"`
	} `json:"nodes"`
	Streams []struct {
		Name   string `json:"name"`
		Leader string `json:"leader"`
	} `json:"streams"`
	Problems []string `json:"problems"`
}

// ClusterStatus runs `jetrelay cluster status --json` against node n and
// returns its parsed output and exit code.
func (c *Cluster) ClusterStatus(ctx context.Context, n *Node) (Status, int, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var st Status
	out, err := exec.CommandContext(ctx, c.Opts.Bin, "cluster", "status", "--json", "--config", n.ConfigPath).Output()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		return st, -1, err
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return st, code, fmt.Errorf("cluster status --json: %v: %.200q", err, out)
	}
	return st, code, nil
}

// Leader returns the leader the status names for stream name.
func (st Status) Leader(name string) string {
	for _, s := range st.Streams {
		if s.Name == name {
			return s.Leader
		}
	}
	return ""
}
