package relaytest

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/rs/zerolog"
)

// Config returns a valid configuration for delivery tests: MX port mxPort,
// DNS from dnsAddr only (never /etc/resolv.conf), a 1s retry schedule, short
// timeouts and data under t.TempDir().
func Config(t testing.TB, dnsAddr string, mxPort int) *config.Config {
	t.Helper()
	c := config.Default()
	c.Dev = false
	c.Hostname = "relay.test"
	c.DataDir = t.TempDir()
	d := &c.Delivery
	d.Port = mxPort
	d.DNS.Servers = []string{dnsAddr}
	d.DNS.Timeout = config.Duration(time.Second)
	d.Retry.Schedule = []config.Duration{config.Duration(time.Second)}
	d.Retry.MaxAge = config.Duration(time.Hour)
	s := config.Duration(3 * time.Second)
	d.Timeouts = config.DeliveryTimeouts{Connect: s, Greeting: s, Mail: s, Rcpt: s, DataInit: s,
		DataBlock: s, DataFinal: s, Idle: config.Duration(2 * time.Second), Attempt: config.Duration(time.Minute)}
	d.ShutdownGrace = config.Duration(5 * time.Second)
	// The fake MX servers live on 127.0.0.x, which delivery refuses by
	// default (delivery.denied_networks): allow loopback explicitly.
	d.AllowedNetworks = []string{"127.0.0.0/8"}
	if err := c.Validate(); err != nil {
		t.Fatalf("relaytest.Config is invalid: %v", err)
	}
	return c
}

// Logger returns a zerolog logger writing to the test log.
func Logger(t testing.TB) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(t)).With().Timestamp().Logger()
}

// LoopbackDialer dials TCP like net.Dialer but refuses any address outside
// 127.0.0.0/8, so a test can never reach the outside world by mistake.
type LoopbackDialer struct {
	net.Dialer
}

// DialContext implements deliver.Dialer.
func (d *LoopbackDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() || ip.To4() == nil {
		return nil, fmt.Errorf("relaytest: refusing to dial %s: tests dial 127.0.0.0/8 only", addr)
	}
	return d.Dialer.DialContext(ctx, network, addr)
}
