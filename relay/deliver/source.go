package deliver

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
)

// Egress sources and pools (issue 16 point 4). A source is a local
// address with its own EHLO name; a pool is a list of sources. An entry's
// user picks its pool (Settings.UserPools; a user without one uses the
// pool named "default" when there is one, else no source: the system's
// choice of address, delivery.source_ip). Entries of different pools to
// one destination wait in separate destination queues ("<key>|pool=<pool>"),
// so a worker's connection, which binds one source, is reused only for
// mail of its own pool. Each new connection takes the pool's source with
// the fewest open connections of this node (round robin among equals);
// when shaping refuses one source (per_source limits) the next is tried.

// Source is one egress address.
type Source struct {
	Name string
	Addr netip.Addr
	// EHLO is the name said in EHLO on its connections ("" = Hostname).
	EHLO string
}

// DefaultPool is the pool of users without one of their own.
const DefaultPool = "default"

// CheckSources reports every source whose address this host cannot bind
// (not configured on an interface, or a bad address): one error per
// source, naming it. cmd calls it at start and `jetrelay check` too.
func CheckSources(srcs []Source) []error {
	var errs []error
	for _, s := range srcs {
		if !s.Addr.IsValid() {
			errs = append(errs, fmt.Errorf("delivery.sources %s: no address", s.Name))
			continue
		}
		ln, err := net.Listen("tcp", netip.AddrPortFrom(s.Addr, 0).String())
		if err != nil {
			errs = append(errs, fmt.Errorf("delivery.sources %s: cannot bind %s: %w", s.Name, s.Addr, err))
			continue
		}
		_ = ln.Close()
	}
	return errs
}

// pools is the parsed source configuration of a runtime.
type pools struct {
	byName map[string][]Source // pool → its sources, in configured order
	users  map[string]string   // user → pool
}

func newPools(set Settings) pools {
	p := pools{byName: map[string][]Source{}, users: set.UserPools}
	src := map[string]Source{}
	for _, s := range set.Sources {
		src[s.Name] = s
	}
	for name, members := range set.Pools {
		for _, m := range members {
			if s, ok := src[m]; ok {
				p.byName[name] = append(p.byName[name], s)
			}
		}
	}
	return p
}

// of is the pool user's mail leaves through ("" = no source).
func (p pools) of(user string) string {
	if len(p.byName) == 0 {
		return ""
	}
	if name, ok := p.users[user]; ok && len(p.byName[name]) > 0 {
		return name
	}
	if len(p.byName[DefaultPool]) > 0 {
		return DefaultPool
	}
	return ""
}

// poolKey is the destination queue of pool's mail to destination key.
func poolKey(key, pool string) string {
	if pool == "" {
		return key
	}
	return key + "|pool=" + pool
}

// sourceCount counts this node's open connections per source, to spread
// new connections over a pool (least connections, then round robin).
type sourceCount struct {
	mu   sync.Mutex
	open map[string]int
	next int
}

// order returns srcs sorted by fewest open connections, starting the
// round at a rotating offset so equals take turns.
func (c *sourceCount) order(srcs []Source) []Source {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.open == nil {
		c.open = map[string]int{}
	}
	c.next++
	out := make([]Source, 0, len(srcs))
	for i := range srcs {
		out = append(out, srcs[(c.next+i)%len(srcs)])
	}
	// Insertion sort: pools are small.
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && c.open[out[j].Name] < c.open[out[j-1].Name]; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

func (c *sourceCount) add(name string, n int) {
	if name == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.open == nil {
		c.open = map[string]int{}
	}
	c.open[name] += n
	if c.open[name] <= 0 {
		delete(c.open, name)
	}
}
