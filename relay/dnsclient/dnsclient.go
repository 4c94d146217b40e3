// Package dnsclient asks DNS questions of a fixed list of recursive servers
// with miekg/dns: UDP with EDNS0 (1232 octets, DNS flag day 2020), a TCP
// retry when an answer is truncated, and the next server when one fails or
// answers anything but NOERROR or NXDOMAIN. Delivery (MX, A, AAAA) and
// `jetrelay dkim check` (TXT) share it, so both follow delivery.dns the same
// way.
package dnsclient

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/miekg/dns"
)

// Defaults.
const (
	DefaultTimeout    = 5 * time.Second
	DefaultResolvConf = "/etc/resolv.conf"
	udpSize           = 1232
)

// Options configure New.
type Options struct {
	// Servers are "ip" or "ip:port" (port 53 by default), asked in order;
	// empty reads ResolvConf.
	Servers []string
	// Timeout bounds one query to one server (default 5 s).
	Timeout time.Duration
	// LoopbackOnly refuses any server outside 127.0.0.0/8 and ::1 (tests).
	LoopbackOnly bool
	// ResolvConf is read when Servers is empty (default /etc/resolv.conf).
	ResolvConf string
	// TrustAD sets the AD bit in every query (RFC 6840 §5.7), asking a
	// validating resolver to say whether the answer is DNSSEC-secure; the
	// caller reads the answer's AD bit (delivery.dns.dnssec: trust_ad).
	TrustAD bool
}

// Client queries the configured servers. It is safe for concurrent use.
type Client struct {
	servers []string
	udp     *dns.Client
	tcp     *dns.Client
	timeout time.Duration
	trustAD bool
}

// New checks the servers (IP addresses only, so that resolving a server
// never needs DNS) and returns a Client.
func New(o Options) (*Client, error) {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	servers := o.Servers
	if len(servers) == 0 {
		if o.ResolvConf == "" {
			o.ResolvConf = DefaultResolvConf
		}
		cc, err := dns.ClientConfigFromFile(o.ResolvConf)
		if err != nil {
			return nil, fmt.Errorf("dns: no servers configured and %w", err)
		}
		for _, s := range cc.Servers {
			servers = append(servers, net.JoinHostPort(s, cc.Port))
		}
	}
	c := &Client{timeout: o.Timeout, trustAD: o.TrustAD,
		udp: &dns.Client{Net: "udp", Timeout: o.Timeout, UDPSize: udpSize},
		tcp: &dns.Client{Net: "tcp", Timeout: o.Timeout}}
	for _, s := range servers {
		addr, err := serverAddr(s)
		if err != nil {
			return nil, err
		}
		if o.LoopbackOnly {
			host, _, _ := net.SplitHostPort(addr)
			if !net.ParseIP(host).IsLoopback() {
				return nil, fmt.Errorf("dns: server %s refused: only loopback servers are allowed", addr)
			}
		}
		c.servers = append(c.servers, addr)
	}
	if len(c.servers) == 0 {
		return nil, errors.New("dns: no servers configured")
	}
	return c, nil
}

// serverAddr turns "ip" or "ip:port" into host:port with port 53 by default.
func serverAddr(s string) (string, error) {
	if ip := net.ParseIP(s); ip != nil {
		return net.JoinHostPort(s, "53"), nil
	}
	host, _, err := net.SplitHostPort(s)
	if err != nil || net.ParseIP(host) == nil {
		return "", fmt.Errorf("dns: server %q is not an IP address (ip or ip:port)", s)
	}
	return s, nil
}

// TrustAD reports whether answers' AD bits are asked for (Options.TrustAD).
func (c *Client) TrustAD() bool { return c.trustAD }

// Servers returns the host:port addresses asked, in order.
func (c *Client) Servers() []string { return append([]string(nil), c.servers...) }

// Query asks each server in turn until one answers NOERROR or NXDOMAIN and
// returns that answer (the caller reads its Rcode). When none does, the
// error names the last failure.
func (c *Client) Query(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.SetEdns0(udpSize, false)
	m.AuthenticatedData = c.trustAD
	var last error
	for _, srv := range c.servers {
		qctx, cancel := context.WithTimeout(ctx, c.timeout)
		in, _, err := c.udp.ExchangeContext(qctx, m, srv)
		if err == nil && in.Truncated {
			in, _, err = c.tcp.ExchangeContext(qctx, m, srv)
		}
		cancel()
		if err != nil {
			last = err
			if ctx.Err() != nil {
				break
			}
			continue
		}
		if in.Rcode == dns.RcodeSuccess || in.Rcode == dns.RcodeNameError {
			return in, nil
		}
		last = fmt.Errorf("%s from %s", dns.RcodeToString[in.Rcode], srv)
	}
	return nil, last
}
