package dkim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// ErrNoRecord is returned by Resolver.LookupTXT when the name does not
// exist or has no TXT record.
var ErrNoRecord = errors.New("no TXT record")

// Resolver config defaults.
const (
	resolvConf     = "/etc/resolv.conf"
	defaultTimeout = 5 * time.Second
	ednsUDPSize    = 1232 // avoids IP fragmentation (DNS flag day 2020)
)

// Resolver looks TXT records up through a fixed list of DNS servers, as
// `jetrelay dkim check` does with delivery.dns.servers.
type Resolver struct {
	// Servers are "ip" or "ip:port" (port 53 by default), asked in order;
	// empty means the nameservers of /etc/resolv.conf.
	Servers []string
	// Timeout bounds each query; 0 means 5 s.
	Timeout time.Duration
}

// LookupTXT returns one string per TXT record at name, its character-strings
// concatenated (RFC 6376 §3.6.2.2). A name without TXT records gives
// ErrNoRecord. Its shape fits go-msgauth's VerifyOptions.LookupTXT once
// bound to a context.
func (r Resolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	servers, err := r.servers()
	if err != nil {
		return nil, err
	}
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), dns.TypeTXT)
	q.SetEdns0(ednsUDPSize, false)
	var errs []error
	for _, srv := range servers {
		resp, err := r.exchange(ctx, q, srv)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		switch resp.Rcode {
		case dns.RcodeSuccess:
			return txtStrings(resp)
		case dns.RcodeNameError:
			return nil, fmt.Errorf("%s: %w (NXDOMAIN)", name, ErrNoRecord)
		default:
			errs = append(errs, fmt.Errorf("%s: %s from %s", name, dns.RcodeToString[resp.Rcode], srv))
		}
	}
	return nil, fmt.Errorf("lookup %s: %w", name, errors.Join(errs...))
}

// exchange sends q over UDP and retries over TCP when the answer was truncated.
func (r Resolver) exchange(ctx context.Context, q *dns.Msg, srv string) (*dns.Msg, error) {
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	c := &dns.Client{Net: "udp", Timeout: timeout, UDPSize: ednsUDPSize}
	resp, _, err := c.ExchangeContext(ctx, q, srv)
	if err == nil && resp.Truncated {
		c.Net = "tcp"
		resp, _, err = c.ExchangeContext(ctx, q, srv)
	}
	return resp, err
}

func txtStrings(resp *dns.Msg) ([]string, error) {
	var out []string
	for _, rr := range resp.Answer {
		if txt, ok := rr.(*dns.TXT); ok {
			out = append(out, strings.Join(txt.Txt, ""))
		}
	}
	if len(out) == 0 {
		return nil, ErrNoRecord
	}
	return out, nil
}

// servers returns host:port addresses to ask.
func (r Resolver) servers() ([]string, error) {
	if len(r.Servers) == 0 {
		cc, err := dns.ClientConfigFromFile(resolvConf)
		if err != nil {
			return nil, fmt.Errorf("no DNS servers configured and %w", err)
		}
		out := make([]string, 0, len(cc.Servers))
		for _, s := range cc.Servers {
			out = append(out, net.JoinHostPort(s, cc.Port))
		}
		return out, nil
	}
	out := make([]string, 0, len(r.Servers))
	for _, s := range r.Servers {
		if net.ParseIP(s) != nil {
			s = net.JoinHostPort(s, "53")
		}
		out = append(out, s)
	}
	return out, nil
}
