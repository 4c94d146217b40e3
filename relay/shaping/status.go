package shaping

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// nodeReport is a node's key n.D: per provider, entries waiting on it and
// messages it sent over about the last minute.
type nodeReport struct {
	Providers map[string]providerReport `json:"providers"`
}

type providerReport struct {
	Waiting int   `json:"waiting,omitempty"`
	Sent    int64 `json:"sent,omitempty"`
}

// report samples every class's sent count and writes this node's report
// every period while it has something to say (with a TTL of three
// periods, so a dead node's report goes away), and once more when it has
// nothing left. It returns what it wrote.
func (s *Shaper) report(ctx context.Context, last []byte) []byte {
	keep := samplesKept(s.timings.reportEvery)
	r := nodeReport{Providers: map[string]providerReport{}}
	s.mu.Lock()
	classes := make([]*class, 0, len(s.classes))
	for _, st := range s.classes {
		classes = append(classes, st)
	}
	s.mu.Unlock()
	for _, st := range classes {
		st.sample(keep)
		if st.Provider == "" {
			continue
		}
		pr := providerReport{Waiting: int(st.waiting.Load()), Sent: st.sentLastMinute()}
		if pr != (providerReport{}) {
			r.Providers[st.Provider] = pr
		}
	}
	data, _ := json.Marshal(r) // plain maps: cannot fail
	if len(r.Providers) == 0 && (last == nil || bytes.Equal(data, last)) {
		return last // nothing to say, and said so already
	}
	if s.health.down() {
		return last
	}
	kctx, cancel := context.WithTimeout(ctx, kvTimeout)
	defer cancel()
	m := &nats.Msg{Subject: "$KV." + Bucket + ".n." + kp(s.node), Data: data}
	if _, err := s.js.PublishMsg(kctx, m, jetstream.WithMsgTTL(ttlOf(3*s.timings.reportEvery))); err != nil {
		if ctx.Err() == nil {
			s.health.fail(err)
		}
		return last
	}
	return data
}

// othersSent is what the other nodes reported sending for c's provider.
func (s *Shaper) othersSent(c Class) int64 {
	if c.Provider == "" {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	for _, r := range s.reports {
		n += r.Providers[c.Provider].Sent
	}
	return n
}

// ProviderStatus is one provider's state across the cluster.
type ProviderStatus struct {
	Name        string `json:"name"`
	Connections int    `json:"connections"` // open now, cluster-wide (slots held)
	Limit       Limits `json:"limit"`       // configured
	Effective   Rate   `json:"effective_rate"`
	// Rate is messages sent over about the last minute (as the nodes
	// reported them, up to a few seconds old).
	Rate           float64    `json:"rate"`
	SuspendedUntil *time.Time `json:"suspended_until"`
	// Reason says what lowered or suspended the provider: "rule NAME:
	// REPLY" or "backoff: REPLY"; "" when nothing did.
	Reason  string `json:"reason"`
	Waiting int    `json:"waiting"` // entries waiting (reported by nodes)
	// RateUntil is when a lowered rate ends (nil when none).
	RateUntil *time.Time `json:"rate_until"`
}

// statusKeys are the keys Status reads.
type statusKeys struct {
	conns     map[string]int // class part → live slots
	overrides map[string]*override
	reports   []nodeReport
}

// Status reads each provider of set from the bucket (no Shaper needed: a
// CLI process calls it). A bucket that does not exist yet is no error:
// every provider is idle.
func Status(ctx context.Context, js jetstream.JetStream, set Settings) ([]ProviderStatus, error) {
	keys := statusKeys{conns: map[string]int{}, overrides: map[string]*override{}}
	kv, err := js.KeyValue(ctx, Bucket)
	switch {
	case errors.Is(err, jetstream.ErrBucketNotFound):
	case err != nil:
		return nil, fmt.Errorf("shaping: bucket %s: %w", Bucket, err)
	default:
		if keys, err = readStatus(ctx, kv); err != nil {
			return nil, err
		}
	}
	now := time.Now()
	c := compile(set, 0)
	out := make([]ProviderStatus, 0, len(c.Providers))
	seen := map[string]bool{}
	for _, p := range c.Providers {
		if !seen[p.Name] {
			seen[p.Name] = true
			out = append(out, keys.provider(p, now))
		}
	}
	return out, nil
}

// provider is one provider's status from the keys read.
func (k statusKeys) provider(p Provider, now time.Time) ProviderStatus {
	part := kp(p.Name)
	ps := ProviderStatus{Name: p.Name, Connections: k.conns[part], Limit: p.Limits}
	for _, r := range k.reports {
		pr := r.Providers[p.Name]
		ps.Waiting += pr.Waiting
		ps.Rate += float64(pr.Sent)
	}
	a, b := k.overrides["s."+part], k.overrides["b."+part]
	ps.Effective = effective(p.Limits.Rate, a, b, now)
	var reasons []string
	if a.suspends(now) {
		until := a.Until
		ps.SuspendedUntil = &until
	}
	for _, o := range []*override{a, b} {
		if o.suspends(now) || o.lowers(now) {
			reasons = append(reasons, o.Rule+": "+o.Reason)
		}
		if o.lowers(now) && (ps.RateUntil == nil || o.Until.After(*ps.RateUntil)) {
			until := o.Until
			ps.RateUntil = &until
		}
	}
	ps.Reason = strings.Join(reasons, "; ")
	return ps
}

// readStatus reads the live slots, overrides and node reports.
func readStatus(ctx context.Context, kv jetstream.KeyValue) (statusKeys, error) {
	k := statusKeys{conns: map[string]int{}, overrides: map[string]*override{}}
	w, err := kv.WatchFiltered(ctx, slices.Clone(watched), jetstream.IgnoreDeletes())
	if err != nil {
		return k, fmt.Errorf("shaping: read %s: %w", Bucket, err)
	}
	defer w.Stop() //nolint:errcheck // read only
	for {
		select {
		case <-ctx.Done():
			return k, fmt.Errorf("shaping: read %s: %w", Bucket, ctx.Err())
		case e := <-w.Updates():
			if e == nil {
				return k, nil
			}
			k.add(e)
		}
	}
}

func (k *statusKeys) add(e jetstream.KeyValueEntry) {
	parts := strings.Split(e.Key(), ".")
	switch {
	case parts[0] == "c" && len(parts) == 4:
		k.conns[parts[1]]++
	case (parts[0] == "s" || parts[0] == "b") && len(parts) == 2:
		if o := decodeOverride(e.Value(), e.Revision()); o != nil {
			k.overrides[e.Key()] = o
		}
	case parts[0] == "n" && len(parts) == 2:
		var r nodeReport
		if json.Unmarshal(e.Value(), &r) == nil {
			k.reports = append(k.reports, r)
		}
	}
}

// ErrNotSuspended is Resume's answer when nothing was in force.
var ErrNotSuspended = errors.New("shaping: neither suspended nor slowed down")

// Resume lifts a provider's suspension and lowered rates (a rule's and
// the builtin backoff) cluster-wide: every node's watch sees the keys go
// and wakes the provider's waiting entries. provider is a provider's name
// (or "dest:"+destination for a destination under the default limits).
// It returns ErrNotSuspended when nothing was in force.
func Resume(ctx context.Context, js jetstream.JetStream, provider string) error {
	kv, err := js.KeyValue(ctx, Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return ErrNotSuspended
	}
	if err != nil {
		return fmt.Errorf("shaping: bucket %s: %w", Bucket, err)
	}
	lifted := false
	for _, prefix := range []string{"s.", "b."} {
		key := prefix + kp(provider)
		v, rev, err := get(ctx, kv, key)
		if err != nil {
			return fmt.Errorf("shaping: resume %s: %w", provider, err)
		}
		if o := decodeOverride(v, rev); o == nil || !o.Until.After(time.Now()) {
			continue
		}
		if err := kv.Purge(ctx, key, jetstream.PurgeTTL(markerTTL)); err != nil {
			return fmt.Errorf("shaping: resume %s: %w", provider, err)
		}
		lifted = true
	}
	if !lifted {
		return ErrNotSuspended
	}
	return nil
}
