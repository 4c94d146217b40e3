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
	if c != nil && !now.Before(c.expires()) {
		c = nil // expired: as good as none
	}
	id, err := s.record(ctx, domain)
	switch {
	case errors.Is(err, errNoRecord):
		return result(c, "") // §3.3: a cached policy outlives a removed record
	case err != nil:
		s.o.Logger.Warn().Err(err).Str("event", "mta_sts_record").Str("domain", domain).Msg("MTA-STS record lookup failed")
		return result(c, "")
	case c != nil && c.ID == id && c.fresh(now):
		return result(c, "")
	}
	p, err := s.fetch.fetch(ctx, domain)
	if err != nil {
		kind := smtpclient.FailSTSFetch
		if fe := (*fetchError)(nil); errors.As(err, &fe) {
			kind = fe.kind
		}
		s.o.Logger.Warn().Err(err).Str("event", "mta_sts_fetch").Str("domain", domain).Str("tls_failure", kind).
			Bool("cached", c != nil).Msg("MTA-STS policy fetch failed; the cached policy (if any) stays in force")
		return result(c, kind)
	}
	c = &cached{ID: id, Policy: p, Fetched: now}
	s.put(ctx, domain, c)
	return result(c, "")
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
	e, err := s.o.KV.Get(ctx, domain)
	if err != nil {
		if !errors.Is(err, jetstream.ErrKeyNotFound) {
			s.o.Logger.Warn().Err(err).Str("event", "mta_sts_cache").Str("domain", domain).Msg("MTA-STS cache read failed")
		}
		return nil
	}
	var c cached
	if err := json.Unmarshal(e.Value(), &c); err != nil {
		return nil
	}
	return &c
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
// record means no policy is published.
func (s *Store) record(ctx context.Context, domain string) (string, error) {
	m, err := s.dns.Query(ctx, "_mta-sts."+domain, dns.TypeTXT)
	if err != nil {
		return "", err
	}
	var ids []string
	for _, rr := range m.Answer {
		txt, ok := rr.(*dns.TXT)
		if !ok {
			continue
		}
		v := strings.Join(txt.Txt, "")
		if !strings.HasPrefix(v, "v=STSv1") {
			continue
		}
		id, err := ParseRecord(v)
		if err != nil {
			return "", errNoRecord
		}
		ids = append(ids, id)
	}
	if len(ids) != 1 {
		return "", errNoRecord
	}
	return ids[0], nil
}

// validKey: KV keys are [-_=.A-Za-z0-9], which covers A-label names.
func validKey(k string) bool {
	if k == "" || len(k) > 253 || strings.HasPrefix(k, ".") || strings.Contains(k, "..") {
		return false
	}
	return strings.IndexFunc(k, func(r rune) bool { return notAlnum(r) && r != '-' && r != '.' && r != '_' }) < 0
}
