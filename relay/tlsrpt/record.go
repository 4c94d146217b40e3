package tlsrpt

import (
	"context"
	"errors"
	"net/url"
	"strings"

	"github.com/jetrelay/jetrelay/relay/dnsclient"
	"github.com/miekg/dns"
)

// maxRUA bounds the report addresses of one record used.
const maxRUA = 10

// errNoRecord: the domain publishes no usable TLSRPT record.
var errNoRecord = errors.New("no TLSRPT record")

// Endpoints are a record's rua destinations (RFC 8460 §3).
type Endpoints struct {
	Mailto []string // addresses
	HTTPS  []string // URLs
}

// ParseRecord parses a _smtp._tls TXT record (RFC 8460 §3):
// "v=TLSRPTv1; rua=mailto:a@example.com,https://example.com/r". Unknown
// fields and schemes are ignored; a record without a usable rua is no
// record.
func ParseRecord(txt string) (Endpoints, error) {
	fields := strings.Split(txt, ";")
	if strings.TrimSpace(fields[0]) != "v=TLSRPTv1" {
		return Endpoints{}, errNoRecord
	}
	var ep Endpoints
	for _, f := range fields[1:] {
		k, v, ok := strings.Cut(strings.TrimSpace(f), "=")
		if !ok || strings.TrimSpace(k) != "rua" {
			continue
		}
		for _, u := range strings.Split(v, ",") {
			if len(ep.Mailto)+len(ep.HTTPS) >= maxRUA {
				break
			}
			ep.add(strings.TrimSpace(u))
		}
	}
	if len(ep.Mailto)+len(ep.HTTPS) == 0 {
		return Endpoints{}, errNoRecord
	}
	return ep, nil
}

func (ep *Endpoints) add(raw string) {
	u, err := url.Parse(raw)
	if err != nil {
		return
	}
	switch strings.ToLower(u.Scheme) {
	case "mailto":
		addr, err := url.PathUnescape(u.Opaque)
		if err != nil || addr == "" {
			return
		}
		addr, _, _ = strings.Cut(addr, "?") // no header fields (RFC 6068 hfields)
		if at := strings.LastIndexByte(addr, '@'); at > 0 && at < len(addr)-1 && !strings.ContainsAny(addr, " <>,\r\n") {
			ep.Mailto = append(ep.Mailto, addr)
		}
	case "https":
		if u.Host != "" {
			ep.HTTPS = append(ep.HTTPS, u.String())
		}
	}
}

// lookupRecord looks up _smtp._tls.<domain> (RFC 8460 §3): records not
// starting with v=TLSRPTv1 are discarded; anything but exactly one left
// means the domain does not implement TLSRPT.
func lookupRecord(ctx context.Context, c *dnsclient.Client, domain string) (Endpoints, error) {
	m, err := c.Query(ctx, "_smtp._tls."+domain, dns.TypeTXT)
	if err != nil {
		return Endpoints{}, err
	}
	var recs []string
	for _, rr := range m.Answer {
		if txt, ok := rr.(*dns.TXT); ok {
			if v := strings.Join(txt.Txt, ""); strings.HasPrefix(v, "v=TLSRPTv1") {
				recs = append(recs, v)
			}
		}
	}
	if len(recs) != 1 {
		return Endpoints{}, errNoRecord
	}
	return ParseRecord(recs[0])
}
