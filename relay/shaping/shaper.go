package shaping

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

const (
	// slotTTL is a connection slot's lease: a node that dies without
	// releasing its slots gives them back after at most this long.
	slotTTL = 30 * time.Second
	// renewEvery is how often a node renews the slots it holds.
	renewEvery = 10 * time.Second
	// reportEvery is how often a node reports waiting entries and sent
	// messages (only when they changed, or to keep the report alive).
	reportEvery = 5 * time.Second
	// connPoll is how long a class waits for a connection slot before it
	// looks again, when no release wakes it earlier.
	connPoll = 5 * time.Second
	// idleAfter: a class unused this long, holding nothing, is forgotten.
	idleAfter = 10 * time.Minute
	// observeQueue bounds replies waiting for the rules.
	observeQueue = 1024
)

// Shaper enforces Settings for one node. Its decisions never block on a
// limit: Connect and Send say how long to wait instead. Connection slots,
// paces, rule counts, suspensions and rate changes of providers live in
// the bucket (Bucket); the default limits are kept per node. A watch on
// the bucket keeps a local copy of slots, suspensions and rate changes,
// so a decision reads no KV and an unlimited Send touches no KV at all.
type Shaper struct {
	kv     jetstream.KeyValue
	js     jetstream.JetStream
	node   string
	log    zerolog.Logger
	events func(Change)
	now    func() time.Time
	health health

	set atomic.Pointer[compiled]

	mu      sync.Mutex
	classes map[string]*class
	reports map[string]nodeReport // other nodes' reports, from the watch

	heldMu sync.Mutex
	held   map[*Conn]struct{} // connections holding (or owed) a slot

	observed chan observation
	timings  timings

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// timings are the lease and loop periods; tests shorten them.
type timings struct {
	slotTTL, renewEvery, reportEvery, connPoll time.Duration
}

// compiled is one Settings snapshot, prepared for decisions.
type compiled struct {
	Settings
	gen       uint64
	providers map[string]*Provider
	rules     []rule
}

// rule is a Rule with its name and provider set resolved.
type rule struct {
	Rule
	name string
	all  bool
	only map[string]bool
}

func compile(set Settings, gen uint64) *compiled {
	c := &compiled{Settings: set, gen: gen, providers: map[string]*Provider{}}
	if c.BackoffFor <= 0 {
		c.BackoffFor = DefaultBackoffFor
	}
	c.Providers = make([]Provider, len(set.Providers))
	for i, p := range set.Providers {
		p.MX = normalizeMX(p.MX)
		c.Providers[i] = p
		if _, dup := c.providers[p.Name]; !dup {
			c.providers[p.Name] = &c.Providers[i]
		}
	}
	for i, r := range set.Rules {
		cr := rule{Rule: r, name: r.Name, only: map[string]bool{}}
		if cr.name == "" {
			cr.name = "rule " + strconv.Itoa(i+1)
		}
		for _, p := range r.Providers {
			cr.all = cr.all || p == "*"
			cr.only[p] = true
		}
		c.rules = append(c.rules, cr)
	}
	return c
}

// limits returns the limits of class key (provider "" is the default).
func (c *compiled) limits(provider string) Limits {
	if provider == "" {
		return c.Default
	}
	if p := c.providers[provider]; p != nil {
		return p.Limits
	}
	return Limits{} // a provider gone by reload: no limits of its own any more
}

// Open creates or updates the bucket, starts the watch and the loops
// that renew slots and report this node, and returns the shaper.
func Open(ctx context.Context, o Options, set Settings) (*Shaper, error) {
	return open(ctx, o, set, timings{slotTTL: slotTTL, renewEvery: renewEvery, reportEvery: reportEvery, connPoll: connPoll})
}

// open is Open with the lease and loop periods (tests shorten them).
func open(ctx context.Context, o Options, set Settings, tm timings) (*Shaper, error) {
	if o.JetStream == nil {
		return nil, errors.New("shaping: no JetStream")
	}
	kv, err := openBucket(ctx, o.JetStream, o.Replicas)
	if err != nil {
		return nil, err
	}
	s := &Shaper{
		kv: kv, js: o.JetStream, node: o.Node, log: o.Logger, events: o.Events, now: o.Now,
		classes: map[string]*class{}, reports: map[string]nodeReport{}, held: map[*Conn]struct{}{},
		observed: make(chan observation, observeQueue),
		timings:  tm,
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.node == "" {
		s.node = "node"
	}
	s.health.log = o.Logger
	s.set.Store(compile(set, 1))
	s.start()
	return s, nil
}

// start runs the watch, the renew/report loop and the rules' worker.
func (s *Shaper) start() {
	ctx, cancel := context.WithCancel(context.Background())
	s.ctx, s.cancel = ctx, cancel
	s.wg.Add(3)
	go func() { defer s.wg.Done(); s.watch(ctx) }()
	go func() { defer s.wg.Done(); s.loop(ctx) }()
	go func() { defer s.wg.Done(); s.observeLoop(ctx) }()
}

// Apply swaps in new settings: they apply from the next decision;
// connections already open stay (a connection over a lowered limit
// finishes its current message and is not replaced). Every class's
// Changed fires.
func (s *Shaper) Apply(set Settings) {
	s.set.Store(compile(set, s.set.Load().gen+1))
	s.mu.Lock()
	classes := make([]*class, 0, len(s.classes))
	for _, st := range s.classes {
		classes = append(classes, st)
	}
	s.mu.Unlock()
	for _, st := range classes {
		st.wake() // under st.mu, as every other notify
	}
}

// Close stops the loops and releases the slots this node still holds.
func (s *Shaper) Close() {
	s.cancel()
	s.wg.Wait()
	s.heldMu.Lock()
	conns := make([]*Conn, 0, len(s.held))
	for c := range s.held {
		conns = append(conns, c)
	}
	s.heldMu.Unlock()
	for _, c := range conns {
		c.Release()
	}
}

// Classify returns the class of a destination from its MX hosts: the
// first provider (in Settings order) with a pattern matching any host,
// else the destination itself under the default limits. Hosts compare
// case-insensitively, without a trailing dot.
func (s *Shaper) Classify(destination string, mxHosts []string) Class {
	set := s.set.Load()
	for i := range set.Providers {
		p := &set.Providers[i]
		for _, h := range mxHosts {
			if matchMX(p.MX, normalizeHost(h)) {
				return Class{Provider: p.Name, Key: p.Name}
			}
		}
	}
	return Class{Key: "dest:" + destination}
}

// normalizeMX lower-cases patterns and drops trailing dots and a leading
// "*" ("*.google.com" is ".google.com").
func normalizeMX(mx []string) []string {
	out := make([]string, 0, len(mx))
	for _, m := range mx {
		m = strings.TrimPrefix(normalizeHost(m), "*")
		if m != "" && m != "." {
			out = append(out, m)
		}
	}
	return out
}

func normalizeHost(h string) string {
	return strings.ToLower(strings.TrimSuffix(strings.TrimSpace(h), "."))
}

// matchMX: ".example.com" matches example.com and every name under it,
// anything else that exact name.
func matchMX(patterns []string, host string) bool {
	for _, p := range patterns {
		if p[0] == '.' {
			if host == p[1:] || strings.HasSuffix(host, p) {
				return true
			}
		} else if host == p {
			return true
		}
	}
	return false
}

// Changed returns a channel closed when limits, suspensions or slots of
// class c change: a slot released (on this node, or on another as the
// watch sees it), a suspension or rate change beginning or ending, a
// reload. A waiting destination selects on it and on Wait.Until.
func (s *Shaper) Changed(c Class) <-chan struct{} {
	st := s.locked(c)
	defer st.mu.Unlock()
	return st.changed
}

// SetWaiting reports how many entries of class c wait on this node (for
// Status); only providers are reported.
func (s *Shaper) SetWaiting(c Class, n int) {
	if c.Provider == "" {
		return
	}
	s.class(c).waiting.Store(int64(n))
}

// loop renews held slots, reports this node and forgets idle classes.
func (s *Shaper) loop(ctx context.Context) {
	renew := time.NewTicker(s.timings.renewEvery)
	defer renew.Stop()
	report := time.NewTicker(s.timings.reportEvery)
	defer report.Stop()
	var last []byte
	for {
		select {
		case <-ctx.Done():
			return
		case <-renew.C:
			s.renew(ctx)
		case <-report.C:
			last = s.report(ctx, last)
			s.forgetIdle()
		}
	}
}
