package smtpclient

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// gathered is one MX host as gathering saw it: the Host delivery would
// dial, or why it is left out. Delivery and Inspect read the same values.
type gathered struct {
	mx    MX
	addrs HostAddrs
	host  Host
	tlsa  []TLSAAnswer // the TLSA lookups made for it (DANE)
	skip  string       // left out without an error (IP literal, no address)
	err   error        // left out: an address or TLSA lookup failed (RFC 7672 §2.2)
}

// gathering is a domain's MX hosts in the order delivery tries them.
type gathering struct {
	hosts    []gathered
	implicit bool // no MX records: the domain itself (RFC 5321 §5.1)
	// secure: the MX answer, or its denial for an implicit MX, was
	// DNSSEC-secure (RFC 7672 §2.2.1).
	secure bool
}

// gather looks up the MX records (preference order, equal preferences
// shuffled; RFC 5321 §5.1), then each host's addresses and, for DANE,
// TLSA records. A failed MX lookup and a null MX (RFC 7505 §3) are errors.
func (t *mxTransport) gather(ctx context.Context) (gathering, error) {
	mxs, secure, err := t.lookupMX(ctx)
	if err != nil {
		return gathering{}, err
	}
	if len(mxs) == 0 { // RFC 7672 §2.2.1: the implicit MX, for DANE too
		g := gathered{mx: MX{Host: t.domain, Secure: secure}}
		g.addrs, g.err = t.res.LookupIP(ctx, t.domain)
		t.gatherHost(ctx, &g)
		return gathering{hosts: []gathered{g}, implicit: true, secure: secure}, nil
	}
	if len(mxs) == 1 && mxs[0].Host == "" {
		return gathering{}, newError(replyNullMX, false, nil)
	}
	out := gathering{secure: mxs[0].Secure}
	for _, mx := range orderMX(mxs) {
		g := gathered{mx: mx}
		if mx.Host == "" || net.ParseIP(strings.Trim(mx.Host, "[]")) != nil {
			t.warn.Warn("mx_invalid:"+mx.Host, func(l zerolog.Logger) {
				l.Warn().Str("event", "mx_invalid").Str("domain", t.domain).Str("mx", mx.Host).
					Msg("MX target is an IP address or empty, not a host name (RFC 5321 §5.1); skipped")
			})
			g.skip = "MX target is an IP address or empty, not a host name (RFC 5321 §5.1)"
			out.hosts = append(out.hosts, g)
			continue
		}
		g.addrs, g.err = t.res.LookupIP(ctx, mx.Host)
		if g.err == nil && g.addrs.CNAME != "" && g.addrs.CNAME != mx.Host {
			t.warn.Warn("mx_cname:"+mx.Host, func(l zerolog.Logger) {
				l.Warn().Str("event", "mx_cname").Str("domain", t.domain).Str("mx", mx.Host).Str("cname", g.addrs.CNAME).
					Msg("MX target is a CNAME (RFC 2181 §10.3); followed")
			})
		}
		t.gatherHost(ctx, &g)
		out.hosts = append(out.hosts, g)
	}
	return out, nil
}

// gatherHost completes g after its address lookup: the Host and, when
// DANE applies, its usable TLSA records.
func (t *mxTransport) gatherHost(ctx context.Context, g *gathered) {
	if g.err != nil {
		return
	}
	g.host = Host{Name: g.mx.Host, IPs: g.addrs.IPs, Port: t.port}
	if len(g.addrs.IPs) == 0 {
		g.skip = "no address records"
		return
	}
	g.err = t.lookupDANE(ctx, g) // RFC 7672 §2.2: a failure makes it unusable, not insecure
}

// lookupHosts is gather's answer as delivery uses it: the hosts to try,
// or the error that defers or fails the domain.
func (t *mxTransport) lookupHosts(ctx context.Context) ([]Host, error) {
	g, err := t.gather(ctx)
	if err != nil {
		return nil, err
	}
	return g.usable()
}

func (g gathering) usable() ([]Host, error) {
	if g.implicit {
		h := g.hosts[0]
		switch {
		case h.err != nil:
			return nil, h.err
		case len(h.host.IPs) == 0:
			return nil, newError(replyNoAddress, false, nil)
		}
		return []Host{h.host}, nil
	}
	var hosts []Host
	var lastErr error
	for _, h := range g.hosts {
		switch {
		case h.err != nil:
			lastErr = h.err
		case h.skip == "":
			hosts = append(hosts, h.host)
		}
	}
	if len(hosts) == 0 {
		var de *DNSError
		var tf *TLSFailure
		if errors.As(lastErr, &de) && de.Kind == DNSTemporary || errors.As(lastErr, &tf) {
			return nil, lastErr
		}
		return nil, newError(replyNoUsableMX, false, lastErr)
	}
	return hosts, nil
}

// lookupMX is LookupMX that also says whether the answer was
// DNSSEC-secure, which for an answer without records is a secure denial
// (resolvers of NewResolver and NewCache; others never say so).
func (t *mxTransport) lookupMX(ctx context.Context) (mxs []MX, secure bool, err error) {
	if sr, ok := t.res.(secureMXResolver); ok {
		mxs, secure, _, err := sr.lookupMXSecure(ctx, t.domain)
		return mxs, secure, err
	}
	mxs, _, err = t.res.LookupMX(ctx, t.domain)
	return mxs, len(mxs) > 0 && mxs[0].Secure, err
}

// secureMXResolver is implemented by this package's resolvers: the MX
// answer's DNSSEC state even when it holds no records.
type secureMXResolver interface {
	lookupMXSecure(ctx context.Context, domain string) ([]MX, bool, time.Duration, error)
}

// orderMX sorts by preference and shuffles records of equal preference
// (RFC 5321 §5.1: "randomize ... to spread the load").
func orderMX(in []MX) []MX {
	out := slices.Clone(in)
	rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	slices.SortStableFunc(out, func(a, b MX) int { return int(a.Pref) - int(b.Pref) })
	return out
}
