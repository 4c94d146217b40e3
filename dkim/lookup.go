package dkim

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/relay/dnsclient"
	"github.com/miekg/dns"
)

// ErrNoRecord is returned by Resolver.LookupTXT when the name does not
// exist or has no TXT record.
var ErrNoRecord = errors.New("no TXT record")

// Resolver looks TXT records up through a fixed list of DNS servers, as
// `jetrelay dkim check` does with delivery.dns.servers (relay/dnsclient,
// the same client delivery uses).
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
	c, err := dnsclient.New(dnsclient.Options{Servers: r.Servers, Timeout: r.Timeout})
	if err != nil {
		return nil, err
	}
	resp, err := c.Query(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, fmt.Errorf("lookup %s: %w", name, err)
	}
	if resp.Rcode == dns.RcodeNameError {
		return nil, fmt.Errorf("%s: %w (NXDOMAIN)", name, ErrNoRecord)
	}
	return txtStrings(resp)
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
