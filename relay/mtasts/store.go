package mtasts

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jetrelay/jetrelay/relay/dnsclient"
	"github.com/jetrelay/jetrelay/relay/netguard"
	"github.com/jetrelay/jetrelay/relay/smtpclient"
	"github.com/miekg/dns"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Bucket is the JetStream KV bucket of cached policies, one key per
// recipient domain (its A-label name, a valid KV key), shared by every
// node so that all of them, and a restart, use one policy until max_age.
const Bucket = "jetrelay_mtasts"

// bucketTTL outlives the longest max_age; expiry is checked on read.
const bucketTTL = (MaxMaxAge + 24*3600) * time.Second

// maxRefreshMargin: a policy is re-fetched this long (at most half its
// max_age) before it expires, so a valid one is always cached.
const maxRefreshMargin = 24 * time.Hour

// OpenBucket creates or opens the cache bucket.
func OpenBucket(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, Bucket)
	if err == nil || !errors.Is(err, jetstream.ErrBucketNotFound) {
		return kv, err
	}
	return js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: Bucket, History: 1, TTL: bucketTTL,
		Replicas: max(replicas, 1), Storage: jetstream.FileStorage,
		Description: "jetrelay: cached MTA-STS policies (RFC 8461)"})
}

// Options configure a Store.
type Options struct {
	KV jetstream.KeyValue // from OpenBucket
	// DNS is delivery.dns: the TXT record and the policy host's address
	// are looked up there.
	DNS dnsclient.Options
	// Roots verify the policy host (system roots plus delivery.tls.ca_file).
	Roots *x509.CertPool
	// Guard refuses policy hosts in delivery.denied_networks (nil: none).
	Guard *netguard.Guard
	// Port is delivery.mta_sts.https_port (0: 443).
	Port int
	// Timeout bounds one fetch (0: DefaultFetchTimeout).
	Timeout time.Duration
	Logger  zerolog.Logger
	Now     func() time.Time // nil: time.Now
}

// Store answers smtpclient.STSSource from the KV cache, fetching policies
// when the TXT id changes or the cached one nears expiry.
type Store struct {
	o     Options
	dns   *dnsclient.Client
	fetch *fetcher
	mu    sync.Mutex
	busy  map[string]chan struct{} // one fetch per domain per node at a time
}

// cached is a KV value.
type cached struct {
	ID      string    `json:"id"`
	Policy  Policy    `json:"policy"`
	Fetched time.Time `json:"fetched"`
}

func (c *cached) expires() time.Time {
	return c.Fetched.Add(time.Duration(c.Policy.MaxAge) * time.Second)
}

func (c *cached) fresh(now time.Time) bool {
	margin := min(time.Duration(c.Policy.MaxAge)*time.Second/2, maxRefreshMargin)
	return now.Before(c.expires().Add(-margin))
}

// New returns a Store.
func New(o Options) (*Store, error) {
	if o.KV == nil {
		return nil, errors.New("mtasts: KV is required")
	}
	return newStore(o)
}

func newStore(o Options) (*Store, error) {
	c, err := dnsclient.New(o.DNS)
	if err != nil {
		return nil, fmt.Errorf("mtasts: %w", err)
	}
	r, err := smtpclient.NewResolver(o.DNS)
	if err != nil {
		return nil, fmt.Errorf("mtasts: %w", err)
	}
	if o.Port <= 0 {
		o.Port = 443
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultFetchTimeout
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Store{o: o, dns: c, fetch: newFetcher(r, o.Guard, o.Roots, o.Port, o.Timeout),
		busy: map[string]chan struct{}{}}, nil
}

var _ smtpclient.STSSource = (*Store)(nil)

// Lookup implements smtpclient.STSSource (RFC 8461 §5): the cached policy
// while its TXT id is unchanged and it is fresh; else a fetch, stored on
// success; a failed fetch keeps a cached policy until it expires and
// otherwise fails open.
func (s *Store) Lookup(ctx context.Context, domain string) smtpclient.STSResult {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	if !validKey(domain) {
		return smtpclient.STSResult{}
	}
	if err := s.wait(ctx, domain); err != nil {
		return smtpclient.STSResult{}
	}
	defer s.done(domain)
	now := s.o.Now()
	c := s.get(ctx, domain)
	id, _, recErr := s.record(ctx, domain)
	st := decide(c, now, id, recErr, func() (Policy, error) { return s.fetch.fetch(ctx, domain) })
	if st.recErr != nil {
		s.o.Logger.Warn().Err(st.recErr).Str("event", "mta_sts_record").Str("domain", domain).
			Msg("MTA-STS record lookup failed")
	}
	if st.fetchErr != nil {
		s.o.Logger.Warn().Err(st.fetchErr).Str("event", "mta_sts_fetch").Str("domain", domain).
			Str("tls_failure", st.res.Failure).Bool("cached", st.cached != nil).
			Msg("MTA-STS policy fetch failed; the cached policy (if any) stays in force")
	}
	if st.put != nil {
		s.put(ctx, domain, st.put)
	}
	return st.res
}

// step is one lookup's decision.
type step struct {
	res      smtpclient.STSResult
	cached   *cached // the unexpired cached policy (nil: none)
	put      *cached // a fetched policy to store (nil: none)
	recErr   error   // the record lookup failed (not "no record")
	fetchErr error   // the fetch was made and failed
	fetched  bool    // a fetch was needed
}

// decide is Lookup's rule (RFC 8461 §5): the cached policy while the
// record's id is unchanged and it is fresh; else fetch, whose policy is
// stored on success; a failed fetch keeps an unexpired cached policy and
// otherwise fails open; a missing or failed record keeps the cached one.
func decide(c *cached, now time.Time, id string, recErr error, fetch func() (Policy, error)) step {
	if c != nil && !now.Before(c.expires()) {
		c = nil // expired: as good as none
	}
	st := step{cached: c}
	switch {
	case errors.Is(recErr, errNoRecord):
		st.res = result(c, "") // §3.3: a cached policy outlives a removed record
		return st
	case recErr != nil:
		st.res, st.recErr = result(c, ""), recErr
		return st
	case c != nil && c.ID == id && c.fresh(now):
		st.res = result(c, "")
		return st
	}
	st.fetched = true
	p, err := fetch()
	if err != nil {
		kind := smtpclient.FailSTSFetch
		if fe := (*fetchError)(nil); errors.As(err, &fe) {
			kind = fe.kind
		}
		st.res, st.fetchErr = result(c, kind), err
		return st
	}
	st.put = &cached{ID: id, Policy: p, Fetched: now}
	st.res = result(st.put, "")
	return st
}

func result(c *cached, failure string) smtpclient.STSResult {
	r := smtpclient.STSResult{Failure: failure}
	if c != nil {
		r.Policy = &smtpclient.STSPolicy{Mode: c.Policy.Mode, MX: c.Policy.MX}
	}
	return r
}

// wait lets one lookup per domain run at a time on this node, so a burst
// of mail to a new domain fetches its policy once.
func (s *Store) wait(ctx context.Context, domain string) error {
	for {
		s.mu.Lock()
		ch, ok := s.busy[domain]
		if !ok {
			s.busy[domain] = make(chan struct{})
			s.mu.Unlock()
			return nil
		}
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (s *Store) done(domain string) {
	s.mu.Lock()
	close(s.busy[domain])
	delete(s.busy, domain)
	s.mu.Unlock()
}

func (s *Store) get(ctx context.Context, domain string) *cached {
	c, _ := s.getErr(ctx, domain)
	return c
}

// getErr is get with the error of a failed read (a missing key is none).
func (s *Store) getErr(ctx context.Context, domain string) (*cached, error) {
	if s.o.KV == nil {
		return nil, errNoCache
	}
	e, err := s.o.KV.Get(ctx, domain)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, nil
		}
		s.o.Logger.Warn().Err(err).Str("event", "mta_sts_cache").Str("domain", domain).Msg("MTA-STS cache read failed")
		return nil, err
	}
	var c cached
	if err := json.Unmarshal(e.Value(), &c); err != nil {
		return nil, fmt.Errorf("cached policy: %w", err)
	}
	return &c, nil
}

func (s *Store) put(ctx context.Context, domain string, c *cached) {
	b, _ := json.Marshal(c)
	if _, err := s.o.KV.Put(ctx, domain, b); err != nil {
		s.o.Logger.Warn().Err(err).Str("event", "mta_sts_cache").Str("domain", domain).Msg("MTA-STS cache write failed")
	}
}

var errNoRecord = errors.New("no MTA-STS record")

// record looks up the _mta-sts TXT record (RFC 8461 §3.1): records not
// starting with v=STSv1 are ignored; anything but exactly one valid
// record means no policy is published. raw is the record's text.
func (s *Store) record(ctx context.Context, domain string) (id, raw string, err error) {
	m, err := s.dns.Query(ctx, "_mta-sts."+domain, dns.TypeTXT)
	if err != nil {
		return "", "", err
	}
	var ids, raws []string
	for _, rr := range m.Answer {
		txt, ok := rr.(*dns.TXT)
		if !ok {
			continue
		}
		v := strings.Join(txt.Txt, "")
		if !strings.HasPrefix(v, "v=STSv1") {
			continue
		}
		raws = append(raws, v)
		id, err := ParseRecord(v)
		if err != nil {
			return "", v, errNoRecord
		}
		ids = append(ids, id)
	}
	if len(ids) != 1 {
		return "", strings.Join(raws, " | "), errNoRecord
	}
	return ids[0], raws[0], nil
}

// validKey: KV keys are [-_=.A-Za-z0-9], which covers A-label names.
func validKey(k string) bool {
	if k == "" || len(k) > 253 || strings.HasPrefix(k, ".") || strings.Contains(k, "..") {
		return false
	}
	return strings.IndexFunc(k, func(r rune) bool { return notAlnum(r) && r != '-' && r != '.' && r != '_' }) < 0
}
