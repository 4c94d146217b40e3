package smtpclient

import (
	"context"
	"slices"
	"strings"
)

// Destination returns the key of the destination tr's mail belongs to:
// mail with equal keys shares connections, concurrency limits and the
// circuit breaker (relay/deliver). For MX delivery that is the set of MX
// host names with the TLS plan, so domains sharing MX hosts — one
// provider's many domains, or an attacker's wildcard subdomains pointing
// at a few never-greeting servers — share one destination and its limits.
// A domain without MX records (implicit MX), with a null MX or whose
// lookup failed is keyed by its own name, as is a route by its Key. The
// lookup goes through the Resolver (cached with NewCache).
func (c *Client) Destination(ctx context.Context, tr Transport) string {
	t, ok := tr.(*mxTransport)
	if !ok || t.invalid != nil {
		return tr.Key()
	}
	mxs, _, err := t.res.LookupMX(ctx, t.domain)
	return t.destination(mxs, err)
}

// CachedDestination is Destination answered from the DNS cache only; ok is
// false when answering would need a lookup.
func (c *Client) CachedDestination(tr Transport) (key string, ok bool) {
	t, isMX := tr.(*mxTransport)
	if !isMX || t.invalid != nil {
		return tr.Key(), true
	}
	cr, isCache := t.res.(*cachingResolver)
	if !isCache {
		return "", false
	}
	mxs, ok, err := cr.peekMX(t.domain)
	if !ok {
		return "", false
	}
	return t.destination(mxs, err), true
}

func (t *mxTransport) destination(mxs []MX, err error) string {
	if err != nil || len(mxs) == 0 || (len(mxs) == 1 && mxs[0].Host == "") {
		return t.Key()
	}
	hosts := make([]string, 0, len(mxs))
	for _, mx := range mxs {
		hosts = append(hosts, strings.ToLower(mx.Host))
	}
	slices.Sort(hosts)
	hosts = slices.Compact(hosts)
	return "mxset:" + strings.Join(hosts, ",") + strings.TrimPrefix(t.Key(), "mx:"+t.domain)
}
