package mtasts

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/relay/smtpclient"
)

// errNoCache: an inspector without a KV bucket (no NATS reachable).
var errNoCache = errors.New("no cache bucket (NATS not reachable)")

// NewInspector returns a Store for Inspect only; o.KV may be nil (the
// cached policy is then reported unavailable). Lookup needs New.
func NewInspector(o Options) (*Store, error) { return newStore(o) }

// Inspection is a read-only look at a domain's MTA-STS state for
// `jetrelay tls check`: the TXT record, a live fetch, the cached policy
// and the decision Lookup would take from them (the same rule, decide),
// without writing the cache.
type Inspection struct {
	Domain string `json:"domain"`
	// Record is the v=STSv1 TXT text, ID its id; RecordError says why
	// there is no usable record ("no MTA-STS record", a lookup failure).
	Record      string `json:"record,omitempty"`
	ID          string `json:"id,omitempty"`
	RecordError string `json:"record_error,omitempty"`
	// Live is the policy fetched now; LiveError and LiveFailure (its
	// TLS-RPT result type) say why the fetch failed.
	Live        *Policy `json:"live,omitempty"`
	LiveError   string  `json:"live_error,omitempty"`
	LiveFailure string  `json:"live_failure,omitempty"`
	// Cached is the KV entry (expired ones included); CacheError says why
	// it could not be read.
	Cached     *CachedPolicy `json:"cached,omitempty"`
	CacheError string        `json:"cache_error,omitempty"`
	// Decision is what delivery uses now, InForce its policy; Source says
	// where it comes from: "cache", "fetch" or "none" (fail-open, RFC 8461
	// §5).
	Decision smtpclient.STSResult `json:"-"`
	InForce  *Policy              `json:"in_force,omitempty"`
	Source   string               `json:"source"`
}

// CachedPolicy is a cached policy as Inspect shows it.
type CachedPolicy struct {
	ID      string    `json:"id"`
	Policy  Policy    `json:"policy"`
	Fetched time.Time `json:"fetched"`
	Expires time.Time `json:"expires"`
	// Fresh: used as it is while the record's id is unchanged (not due
	// for a refresh); Expired: no longer used at all.
	Fresh   bool `json:"fresh"`
	Expired bool `json:"expired"`
}

// Inspect looks domain's MTA-STS state up: the record, the cached
// policy, and a live fetch (always made, when a record exists), and
// decides as Lookup would. Nothing is written.
func (s *Store) Inspect(ctx context.Context, domain string) Inspection {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	in := Inspection{Domain: domain, Source: "none"}
	now := s.o.Now()
	c, err := s.getErr(ctx, domain)
	if err != nil {
		in.CacheError = err.Error()
	}
	if c != nil {
		in.Cached = &CachedPolicy{ID: c.ID, Policy: c.Policy, Fetched: c.Fetched, Expires: c.expires(),
			Fresh: c.fresh(now), Expired: !now.Before(c.expires())}
	}
	id, raw, recErr := s.record(ctx, domain)
	in.Record, in.ID = raw, id
	if recErr != nil {
		in.RecordError = recErr.Error()
	}
	var live func() (Policy, error)
	if recErr == nil {
		p, err := s.fetch.fetch(ctx, domain)
		in.inspectFetch(p, err)
		live = func() (Policy, error) { return p, err }
	}
	st := decide(c, now, id, recErr, live)
	in.Decision = st.res
	switch {
	case st.res.Policy == nil:
	case st.put != nil:
		in.Source, in.InForce = "fetch", &st.put.Policy
	default:
		in.Source, in.InForce = "cache", &st.cached.Policy
	}
	return in
}

func (in *Inspection) inspectFetch(p Policy, err error) {
	if err == nil {
		in.Live = &p
		return
	}
	in.LiveError, in.LiveFailure = err.Error(), smtpclient.FailSTSFetch
	if fe := (*fetchError)(nil); errors.As(err, &fe) {
		in.LiveFailure = fe.kind
	}
}

// Fixed is an smtpclient.STSSource that answers one domain's decision
// (Inspection.Decision) and no policy for any other: `tls check` builds
// delivery's client with it, so the policy order is delivery's own code.
type Fixed struct {
	Domain string
	Result smtpclient.STSResult
}

// Lookup implements smtpclient.STSSource.
func (f Fixed) Lookup(_ context.Context, domain string) smtpclient.STSResult {
	if strings.EqualFold(strings.TrimSuffix(domain, "."), f.Domain) {
		return f.Result
	}
	return smtpclient.STSResult{}
}
