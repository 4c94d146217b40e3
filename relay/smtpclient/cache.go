package smtpclient

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"
)

// Cache bounds.
const (
	cacheMinTTL      = 5 * time.Second
	cacheMaxTTL      = time.Hour
	cacheNegativeTTL = time.Minute
	cacheTempFailTTL = 2 * time.Second
	cacheMaxEntries  = 50000
)

// cachingResolver caches another Resolver's answers for their TTL (clamped),
// NXDOMAIN for a minute and temporary failures for two seconds, and runs one
// query per name at a time however many workers ask (no DNS per message).
type cachingResolver struct {
	r   Resolver
	now func() time.Time
	mu  sync.Mutex
	m   map[string]*cacheEntry
}

type cacheEntry struct {
	ready chan struct{} // closed when the answer is in
	mx    []MX
	addrs HostAddrs
	tlsa  []TLSA
	// secure: the TLSA or MX answer was DNSSEC-secure.
	secure bool
	err    error
	exp    time.Time
}

// NewCache returns a Resolver that caches r's answers for their TTL
// (clamped to 5s..1h), NXDOMAIN for a minute and temporary failures for
// two seconds, and asks r once per name however many callers ask at once.
func NewCache(r Resolver) Resolver { return newCachingResolver(r) }

func newCachingResolver(r Resolver) *cachingResolver {
	return &cachingResolver{r: r, now: time.Now, m: map[string]*cacheEntry{}}
}

func (c *cachingResolver) LookupMX(ctx context.Context, domain string) ([]MX, time.Duration, error) {
	mx, _, ttl, err := c.lookupMXSecure(ctx, domain)
	return mx, ttl, err
}

func (c *cachingResolver) lookupMXSecure(ctx context.Context, domain string) ([]MX, bool, time.Duration, error) {
	e, err := c.get(ctx, "mx:"+domain, func(ctx context.Context, ce *cacheEntry) (time.Duration, error) {
		if sr, ok := c.r.(secureMXResolver); ok {
			mx, secure, ttl, err := sr.lookupMXSecure(ctx, domain)
			ce.mx, ce.secure = mx, secure
			return ttl, err
		}
		mx, ttl, err := c.r.LookupMX(ctx, domain)
		ce.mx = mx
		return ttl, err
	})
	if err != nil {
		return nil, false, 0, err
	}
	return e.mx, e.secure, time.Until(e.exp), e.err
}

func (c *cachingResolver) LookupIP(ctx context.Context, host string) (HostAddrs, error) {
	e, err := c.get(ctx, "ip:"+host, func(ctx context.Context, ce *cacheEntry) (time.Duration, error) {
		a, err := c.r.LookupIP(ctx, host)
		ce.addrs = a
		return a.TTL, err
	})
	if err != nil {
		return HostAddrs{}, err
	}
	return e.addrs, e.err
}

// get returns a fresh entry for key, fetching it (once) when missing or
// expired. The returned error is only the caller's context ending.
func (c *cachingResolver) get(ctx context.Context, key string,
	fetch func(context.Context, *cacheEntry) (time.Duration, error)) (*cacheEntry, error) {
	c.mu.Lock()
	e := c.m[key]
	if e != nil && !isReady(e) {
		c.mu.Unlock()
		return c.wait(ctx, e)
	}
	if e != nil && c.now().Before(e.exp) {
		c.mu.Unlock()
		return e, nil
	}
	e = &cacheEntry{ready: make(chan struct{})}
	if len(c.m) >= cacheMaxEntries {
		c.sweepLocked()
	}
	c.m[key] = e
	c.mu.Unlock()

	c.fill(ctx, key, e, fetch)
	return e, nil
}

// fill runs fetch for e and publishes the answer. A fetch that panics
// still completes e (as a temporary failure, so waiting callers go on)
// before the panic goes on to the caller's recover.
func (c *cachingResolver) fill(ctx context.Context, key string, e *cacheEntry,
	fetch func(context.Context, *cacheEntry) (time.Duration, error)) {
	done := false
	defer func() {
		if !done {
			typ, name, _ := strings.Cut(key, ":")
			e.err = &DNSError{Name: name, Type: strings.ToUpper(typ), Kind: DNSTemporary, Err: errors.New("resolver failed")}
			e.exp = c.now().Add(cacheTempFailTTL)
			close(e.ready)
		}
	}()
	// The lookup is shared: it must not die with the first asker's context.
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	ttl, err := fetch(lctx, e)
	e.err = err
	e.exp = c.now().Add(clampTTL(ttl, err))
	done = true
	close(e.ready)
}

func (c *cachingResolver) wait(ctx context.Context, e *cacheEntry) (*cacheEntry, error) {
	select {
	case <-e.ready:
		return e, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func isReady(e *cacheEntry) bool {
	select {
	case <-e.ready:
		return true
	default:
		return false
	}
}

func clampTTL(ttl time.Duration, err error) time.Duration {
	var de *DNSError
	switch {
	case errors.As(err, &de) && de.Kind == DNSNotFound:
		return cacheNegativeTTL
	case err != nil:
		return cacheTempFailTTL
	case ttl < cacheMinTTL:
		return cacheMinTTL
	case ttl > cacheMaxTTL:
		return cacheMaxTTL
	}
	return ttl
}

func (c *cachingResolver) sweepLocked() {
	now := c.now()
	for k, e := range c.m {
		if isReady(e) && now.After(e.exp) {
			delete(c.m, k)
		}
	}
	if len(c.m) >= cacheMaxEntries { // all fresh: drop everything ready
		for k, e := range c.m {
			if isReady(e) {
				delete(c.m, k)
			}
		}
	}
}

// peekMX returns domain's cached MX records without a lookup; ok is false
// when there is no fresh answer in the cache.
func (c *cachingResolver) peekMX(domain string) (mx []MX, ok bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.m["mx:"+domain]
	if e == nil || !isReady(e) || !c.now().Before(e.exp) {
		return nil, false, nil
	}
	return e.mx, true, e.err
}
