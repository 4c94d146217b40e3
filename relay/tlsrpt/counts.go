package tlsrpt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/dnsname"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/nats-io/nats.go/jetstream"
)

// Bucket holds the day counts ("c.<day>.<domain>") and the sent markers
// ("m.<day>.<domain>"), shared by every node.
const Bucket = "jetrelay_tlsrpt"

// bucketTTL keeps a week of counts for `jetrelay tlsrpt show` and the
// markers past the day they guard.
const bucketTTL = 8 * 24 * time.Hour

// dayLayout is the day in keys and reports (UTC).
const dayLayout = "2006-01-02"

// Policy types (RFC 8460 §4.3.1).
const (
	TypeSTS      = "sts"
	TypeTLSA     = "tlsa"
	TypeNoPolicy = "no-policy-found"
)

// maxFailureRows bounds the failure-details rows kept per policy: more
// distinct (result, addresses, MX) combinations are folded into one row
// without addresses.
const maxFailureRows = 200

// OpenBucket creates or opens the bucket.
func OpenBucket(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, Bucket)
	if err == nil || !errors.Is(err, jetstream.ErrBucketNotFound) {
		return kv, err
	}
	return js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: Bucket, History: 1, TTL: bucketTTL,
		Replicas: max(replicas, 1), Storage: jetstream.FileStorage,
		Description: "jetrelay: TLS session counts and report markers (RFC 8460)"})
}

// Day is a UTC day as keys name it.
func Day(t time.Time) string { return t.UTC().Format(dayLayout) }

func countKey(day, domain string) string  { return "c." + day + "." + domain }
func markerKey(day, domain string) string { return "m." + day + "." + domain }

// DomainCounts are one recipient domain's sessions of one day.
type DomainCounts struct {
	Domain   string         `json:"domain"`
	Day      string         `json:"day"`
	Policies []*PolicyCount `json:"policies"`
}

// PolicyCount is the sessions under one policy: type, and for tlsa the
// MX host whose TLSA records applied.
type PolicyCount struct {
	Type     string          `json:"type"`
	MXHost   string          `json:"mx_host,omitempty"`
	Success  int64           `json:"success"`
	Failures []*FailureCount `json:"failures,omitempty"`
}

// FailureCount is one failure-details row (RFC 8460 §4.3.2).
type FailureCount struct {
	Result      string `json:"result"`
	SendingIP   string `json:"sending_ip,omitempty"`
	ReceivingMX string `json:"receiving_mx,omitempty"`
	ReceivingIP string `json:"receiving_ip,omitempty"`
	Count       int64  `json:"count"`
}

// Failed is the sum of p's failures.
func (p *PolicyCount) Failed() int64 {
	var n int64
	for _, f := range p.Failures {
		n += f.Count
	}
	return n
}

// session is one delivery event reduced to what a report needs.
type session struct {
	day, domain, typ, mx string
	failure              FailureCount
	ok                   bool
}

// sessionOf reads a delivery event; ok is false for an event that is not
// a TLS session (see the package comment).
func sessionOf(e *events.Event) (session, bool) {
	if e.Event != events.Delivery || e.Domain == "" {
		return session{}, false
	}
	dom, err := dnsname.ToASCII(strings.TrimSuffix(e.Domain, "."))
	s := session{day: Day(e.Time), domain: strings.ToLower(dom)}
	if err != nil || !validKeyPart(s.domain) {
		return session{}, false
	}
	switch e.TLSPolicy {
	case "dane":
		s.typ, s.mx = TypeTLSA, strings.ToLower(strings.TrimSuffix(e.MX, "."))
	case "mta-sts", "mta-sts-testing":
		s.typ = TypeSTS
	default:
		s.typ = TypeNoPolicy
	}
	switch {
	case e.TLSFailure != "":
		s.failure = FailureCount{Result: e.TLSFailure, ReceivingMX: e.MX, ReceivingIP: e.IP, Count: 1}
	case e.TLS != "" && e.TLS != "none" && e.TLS != "failed":
		s.ok = true
	default:
		return session{}, false
	}
	return s, true
}

// add counts one session into d.
func (d *DomainCounts) add(s session) {
	d.merge(&DomainCounts{Policies: []*PolicyCount{s.policy()}})
}

func (s session) policy() *PolicyCount {
	p := &PolicyCount{Type: s.typ, MXHost: s.mx}
	if s.ok {
		p.Success = 1
	} else {
		f := s.failure
		p.Failures = []*FailureCount{&f}
	}
	return p
}

// merge adds o's counts to d.
func (d *DomainCounts) merge(o *DomainCounts) {
	for _, op := range o.Policies {
		i := slices.IndexFunc(d.Policies, func(p *PolicyCount) bool { return p.Type == op.Type && p.MXHost == op.MXHost })
		if i < 0 {
			d.Policies = append(d.Policies, &PolicyCount{Type: op.Type, MXHost: op.MXHost})
			i = len(d.Policies) - 1
		}
		p := d.Policies[i]
		p.Success += op.Success
		for _, of := range op.Failures {
			p.addFailure(*of)
		}
	}
}

func (p *PolicyCount) addFailure(f FailureCount) {
	for _, have := range p.Failures {
		if have.Result == f.Result && have.SendingIP == f.SendingIP && have.ReceivingMX == f.ReceivingMX &&
			have.ReceivingIP == f.ReceivingIP {
			have.Count += f.Count
			return
		}
	}
	if len(p.Failures) >= maxFailureRows {
		f = FailureCount{Result: f.Result, Count: f.Count}
		for _, have := range p.Failures {
			if have.Result == f.Result && have.SendingIP == "" && have.ReceivingMX == "" && have.ReceivingIP == "" {
				have.Count += f.Count
				return
			}
		}
	}
	p.Failures = append(p.Failures, &f)
}

// addTo folds delta into the KV key of its day and domain with
// compare-and-swap, retrying a lost race a bounded number of times.
func addTo(ctx context.Context, kv jetstream.KeyValue, delta *DomainCounts) error {
	key := countKey(delta.Day, delta.Domain)
	for try := 0; try < casTries; try++ {
		cur := &DomainCounts{Domain: delta.Domain, Day: delta.Day}
		var rev uint64
		e, err := kv.Get(ctx, key)
		switch {
		case err == nil:
			if err := json.Unmarshal(e.Value(), cur); err != nil {
				return fmt.Errorf("tlsrpt: %s: %w", key, err)
			}
			rev = e.Revision()
		case !errors.Is(err, jetstream.ErrKeyNotFound):
			return fmt.Errorf("tlsrpt: %s: %w", key, err)
		}
		cur.merge(delta)
		b, err := json.Marshal(cur)
		if err != nil {
			return err
		}
		if rev == 0 {
			_, err = kv.Create(ctx, key, b)
		} else {
			_, err = kv.Update(ctx, key, b, rev)
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !queue.IsConflict(err) {
			return fmt.Errorf("tlsrpt: %s: %w", key, err)
		}
	}
	return fmt.Errorf("tlsrpt: %s: too many concurrent updates", key)
}

// casTries bounds one key's compare-and-swap retries per flush.
const casTries = 20

// validKeyPart: KV keys are [-_=.A-Za-z0-9]; domains are A-labels.
func validKeyPart(k string) bool {
	if k == "" || len(k) > 253 || strings.HasPrefix(k, ".") || strings.HasSuffix(k, ".") || strings.Contains(k, "..") {
		return false
	}
	return strings.IndexFunc(k, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == '_')
	}) < 0
}

// Read returns the counts of day (Day's form), one DomainCounts per domain
// sorted by name; domain "" means every domain.
func Read(ctx context.Context, kv jetstream.KeyValue, day, domain string) ([]*DomainCounts, error) {
	filter := countKey(day, ">")
	if domain != "" {
		domain = strings.ToLower(strings.TrimSuffix(domain, "."))
		if !validKeyPart(domain) {
			return nil, fmt.Errorf("tlsrpt: %q is not a domain name in A-labels", domain)
		}
		filter = countKey(day, domain)
	}
	lister, err := kv.ListKeysFiltered(ctx, filter)
	if err != nil {
		return nil, err
	}
	var out []*DomainCounts
	for key := range lister.Keys() {
		e, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		} else if err != nil {
			return nil, err
		}
		var d DomainCounts
		if err := json.Unmarshal(e.Value(), &d); err != nil {
			return nil, fmt.Errorf("tlsrpt: %s: %w", key, err)
		}
		out = append(out, &d)
	}
	slices.SortFunc(out, func(a, b *DomainCounts) int { return strings.Compare(a.Domain, b.Domain) })
	return out, nil
}
