package submit

import (
	"context"
	"errors"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Bans lists the bans in force, clients first, then (user, client) pairs,
// each sorted by client.
func (b *Brake) Bans(ctx context.Context) ([]Ban, error) {
	keys, err := b.keys(ctx, "ip.*", "up.>")
	if err != nil {
		return nil, err
	}
	now := b.now()
	var out []Ban
	for _, k := range keys {
		r, rev, err := b.get(ctx, k)
		if err != nil {
			return nil, err
		}
		if rev == 0 || !r.bannedAt(now) {
			continue
		}
		out = append(out, Ban{Client: r.Client, User: r.User, Until: r.Until, Failures: r.Failures})
	}
	sort.SliceStable(out, func(i, j int) bool {
		if (out[i].User == "") != (out[j].User == "") {
			return out[i].User == ""
		}
		return out[i].Client < out[j].Client
	})
	return out, nil
}

// Unban lifts the ban of the client that ip belongs to (an IPv4 address,
// or any address of an IPv6 /64) and of every (user, client) pair of it,
// and resets their counters. It returns how many records it removed.
func (b *Brake) Unban(ctx context.Context, ip string) (int, error) {
	client := clientKey(strings.TrimSpace(ip))
	enc := keyEnc.EncodeToString([]byte(client))
	keys, err := b.keys(ctx, "ip."+enc, "up."+enc+".*")
	if err != nil {
		return 0, err
	}
	b.neg.forget(client)
	return len(keys), b.purge(ctx, keys)
}

// UnbanAll lifts every ban and resets every counter.
func (b *Brake) UnbanAll(ctx context.Context) (int, error) {
	keys, err := b.keys(ctx, ">")
	if err != nil {
		return 0, err
	}
	return len(keys), b.purge(ctx, keys)
}

func (b *Brake) keys(ctx context.Context, filters ...string) ([]string, error) {
	l, err := b.kv.ListKeysFiltered(ctx, filters...)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for k := range l.Keys() {
		out = append(out, k)
	}
	sort.Strings(out)
	return out, nil
}

func (b *Brake) purge(ctx context.Context, keys []string) error {
	var errs []error
	for _, k := range keys {
		errs = append(errs, b.kv.Purge(ctx, k, jetstream.PurgeTTL(brakeMarkerTTL)))
	}
	return errors.Join(errs...)
}

const (
	// negTTL is how long a "client not banned" answer is reused at
	// connect; a ban found or started on this node clears it at once.
	negTTL = time.Second
	// negMax bounds the negative cache (cleared when full).
	negMax = 4096
)

// negCache remembers briefly which clients were not banned, so that a
// burst of connections costs one bucket read.
type negCache struct {
	mu sync.Mutex
	m  map[string]time.Time // client -> when the answer was read
}

func (c *negCache) init() { c.m = map[string]time.Time{} }

func (c *negCache) fresh(client string, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.m[client]
	return ok && now.Sub(t) < negTTL && !now.Before(t)
}

func (c *negCache) put(client string, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= negMax {
		clear(c.m)
	}
	c.m[client] = now
}

func (c *negCache) forget(client string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, client)
}
