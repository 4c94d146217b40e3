package clustertest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NATSCluster is a JetStream cluster of nats-server processes on loopback,
// the "external NATS" way of running jetrelay.
type NATSCluster struct {
	Servers []*Node // Node.ClientAddr/RouteAddr set; SubmitAddr/AdminAddr unused
}

// StartNATS writes one config per server under dir and starts them.
func StartNATS(bin, dir string, size int) (*NATSCluster, error) {
	nc := &NATSCluster{}
	ports := portPicker{}
	for i := 0; i < size; i++ {
		name := fmt.Sprintf("nats-%d", i+1)
		n := &Node{Name: name, Dir: filepath.Join(dir, name), bin: bin, ClientAddr: ports.addr(), RouteAddr: ports.addr()}
		n.ConfigPath = filepath.Join(n.Dir, "nats.conf")
		n.args = []string{"-c", n.ConfigPath}
		nc.Servers = append(nc.Servers, n)
	}
	var routes []string
	for _, n := range nc.Servers {
		routes = append(routes, "nats://"+n.RouteAddr)
	}
	for _, n := range nc.Servers {
		if err := os.MkdirAll(filepath.Join(n.Dir, "store"), 0o700); err != nil {
			return nil, err
		}
		host, port := splitAddr(n.ClientAddr)
		rhost, rport := splitAddr(n.RouteAddr)
		conf := fmt.Sprintf("server_name: %s\nhost: %s\nport: %s\njetstream { store_dir: %q }\n"+
			"cluster { name: external, host: %s, port: %s, routes: [%s] }\n",
			n.Name, host, port, filepath.Join(n.Dir, "store"), rhost, rport, strings.Join(routes, ", "))
		if err := os.WriteFile(n.ConfigPath, []byte(conf), 0o600); err != nil {
			return nil, err
		}
		if err := n.Start(); err != nil {
			return nil, err
		}
	}
	return nc, nil
}

// URL is the comma-separated client URL list (nats.url).
func (c *NATSCluster) URL() string {
	var urls []string
	for _, n := range c.Servers {
		urls = append(urls, "nats://"+n.ClientAddr)
	}
	return strings.Join(urls, ",")
}

// WaitJetStream polls until the cluster answers JetStream requests (its
// meta leader is elected).
func (c *NATSCluster) WaitJetStream(ctx context.Context) error {
	for {
		if err := c.ping(ctx); err == nil {
			return nil
		} else if ctx.Err() != nil {
			return fmt.Errorf("external JetStream not ready: %w (last: %v)", ctx.Err(), err)
		}
		for _, n := range c.Servers {
			if n.Exited() {
				return fmt.Errorf("%s exited:\n%s", n.Name, n.LogTail(4000))
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (c *NATSCluster) ping(ctx context.Context) error {
	conn, err := nats.Connect(c.URL(), nats.Timeout(2*time.Second), nats.MaxReconnects(0))
	if err != nil {
		return err
	}
	defer conn.Close()
	js, err := jetstream.New(conn)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	_, err = js.AccountInfo(ctx)
	return err
}

// Close kills every server.
func (c *NATSCluster) Close() {
	for _, n := range c.Servers {
		_ = n.Kill()
	}
}

func splitAddr(a string) (host, port string) {
	i := strings.LastIndex(a, ":")
	return a[:i], a[i+1:]
}
