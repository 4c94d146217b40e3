package queue

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
)

// RouteUser is the user name of the route connections between the
// embedded servers of a cluster; the password is the shared route secret.
const RouteUser = "jetrelay-route"

// clusterOptions makes so a node of the JetStream cluster c describes:
// route port, route credentials (every route, solicited or accepted,
// authenticates with RouteUser and the shared secret), the routes to the
// other nodes and optional TLS. A route to this node's own address is
// left to nats-server, which recognises itself and drops it.
func clusterOptions(so *server.Options, c *ClusterOptions) error {
	if c.Password == "" {
		return errors.New("nats.cluster: the route secret (password_file) is empty")
	}
	host, port, err := splitListen("nats.cluster.listen", c.Listen)
	if err != nil {
		return err
	}
	if port == 0 {
		return fmt.Errorf("nats.cluster.listen %q: needs a fixed port (the other nodes' routes name it)", c.Listen)
	}
	name := c.Name
	if name == "" {
		name = "jetrelay"
	}
	so.Cluster = server.ClusterOpts{
		Name: name, Host: host, Port: port,
		Username: RouteUser, Password: c.Password,
	}
	for _, r := range c.Routes {
		u, err := url.Parse(r)
		if err != nil || u.Host == "" {
			return fmt.Errorf("nats.cluster.routes: %q is not a route URL such as nats://relay-b:6222", r)
		}
		u.User = url.UserPassword(RouteUser, c.Password)
		so.Routes = append(so.Routes, u)
	}
	if c.TLSCert == "" {
		return nil
	}
	tc, err := routeTLS(c)
	if err != nil {
		return err
	}
	so.Cluster.TLSConfig = tc
	return nil
}

// routeTLS is the TLS configuration of the routes: this node's certificate
// (also presented as a client); with a CA file, the peers' certificates
// are verified against it in both directions (mutual TLS), otherwise
// against the system roots, with no client certificate required.
func routeTLS(c *ClusterOptions) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("nats.cluster.tls: %w", err)
	}
	tc := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
	}
	if c.TLSCAFile == "" {
		return tc, nil
	}
	pem, err := os.ReadFile(c.TLSCAFile)
	if err != nil {
		return nil, fmt.Errorf("nats.cluster.tls.ca_file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("nats.cluster.tls.ca_file %s: no PEM certificate in it", c.TLSCAFile)
	}
	tc.RootCAs, tc.ClientCAs = pool, pool
	tc.ClientAuth = tls.RequireAndVerifyClientCert
	return tc, nil
}

// ReadRouteSecret reads the shared route secret from path (trimmed).
func ReadRouteSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("nats.cluster.password_file: %w", err)
	}
	pass := strings.TrimSpace(string(b))
	if pass == "" {
		return "", fmt.Errorf("nats.cluster.password_file %s is empty", path)
	}
	return pass, nil
}
