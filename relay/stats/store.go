package stats

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

const (
	// defaultRetention is how long counts are kept.
	defaultRetention = 8 * 24 * time.Hour
	// defaultInterval is how long a node adds up before it writes.
	defaultInterval = 5 * time.Second
	// maxPoints bounds one Series.
	maxPoints = 20000
)

// Options configure Open.
type Options struct {
	Replicas  int
	Retention time.Duration // default 8 days
	Log       zerolog.Logger
	// Interval is how long a node adds up pulled events before it writes
	// their sums (default 5 s).
	Interval time.Duration
	// AfterFlush, when set, is called by Run after each write with the
	// users whose counts it changed (the bounce-rate guard evaluates them).
	AfterFlush func(ctx context.Context, users []string)
	// Now is the clock of queries and of the clamp on event times
	// (default time.Now).
	Now func() time.Time
}

// Store reads and (through Run) writes the counts.
type Store struct {
	js  jetstream.JetStream
	kv  jetstream.KeyValue
	o   Options
	log zerolog.Logger

	mu      sync.Mutex
	known   map[string]cached  // last value this node wrote per key (CAS without a read)
	settled map[string]settled // sums of settled hours (window.go)
}

// cached is a key's value as this node last wrote it.
type cached struct {
	rev  uint64
	data []byte
}

// Open creates or opens the KV bucket. Its max_age is the retention: an
// hour's keys go retention after their last write.
func Open(ctx context.Context, js jetstream.JetStream, o Options) (*Store, error) {
	if o.Retention <= 0 {
		o.Retention = defaultRetention
	}
	if o.Interval <= 0 {
		o.Interval = defaultInterval
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "jetrelay delivery counts per user, minute and recipient domain (relay/stats)",
		History:     1,
		TTL:         o.Retention,
		Storage:     jetstream.FileStorage,
		Replicas:    max(o.Replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("stats: bucket %s: %w", Bucket, err)
	}
	return &Store{js: js, kv: kv, o: o, log: o.Log, known: map[string]cached{}, settled: map[string]settled{}}, nil
}

// ErrNoStats: the bucket does not exist (no relay has counted yet).
var ErrNoStats = errors.New("stats: no " + Bucket + " bucket on this NATS (has jetrelay serve run against it?)")

// Attach opens the existing bucket for queries (ops commands): it never
// creates or changes it.
func Attach(ctx context.Context, js jetstream.JetStream) (*Store, error) {
	kv, err := js.KeyValue(ctx, Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, ErrNoStats
	}
	if err != nil {
		return nil, fmt.Errorf("stats: bucket %s: %w", Bucket, err)
	}
	o := Options{Retention: defaultRetention, Interval: defaultInterval, Now: time.Now, Log: zerolog.Nop()}
	return &Store{js: js, kv: kv, o: o, log: o.Log, known: map[string]cached{}, settled: map[string]settled{}}, nil
}

// span is q's [since, until) with until defaulting to now.
func (s *Store) span(q Query) (time.Time, time.Time) {
	until := q.Until
	if until.IsZero() {
		until = s.o.Now()
	}
	return q.Since, until
}

// Totals adds up q's counts: at minute resolution for a user or all users,
// at hour resolution (whole hours from Since's) for a domain.
func (s *Store) Totals(ctx context.Context, q Query) (Counts, error) {
	if q.Domain != "" {
		rows, err := s.Rows(ctx, q)
		var c Counts
		for _, r := range rows {
			if r.Domain != "" {
				c = c.Add(r.Counts)
			}
		}
		return c, err
	}
	pts, err := s.Series(ctx, q, 0)
	var c Counts
	for _, p := range pts {
		c = c.Add(p.Counts)
	}
	return c, err
}

// Series returns q's counts in steps of step (at least a minute, whole
// minutes; 0 = one point for the whole span), oldest first, every step
// present. Points start at Since rounded down to the minute. With a
// Domain, counts are whole hours, each in the point its hour starts in.
func (s *Store) Series(ctx context.Context, q Query, step time.Duration) ([]Point, error) {
	since, until := s.span(q)
	since = since.Truncate(time.Minute)
	if q.Domain != "" {
		since = since.Truncate(time.Hour)
	}
	if !until.After(since) {
		return nil, nil
	}
	if step == 0 {
		step = (until.Sub(since) + time.Minute - 1).Truncate(time.Minute)
	}
	step = step.Truncate(time.Minute)
	if step < time.Minute {
		return nil, errors.New("stats: a series step must be at least a minute")
	}
	n := int((until.Sub(since) + step - 1) / step)
	if n > maxPoints {
		return nil, fmt.Errorf("stats: %d points asked for, at most %d", n, maxPoints)
	}
	pts := make([]Point, n)
	for i := range pts {
		pts[i].Start = since.Add(time.Duration(i) * step).UTC()
	}
	put := func(t time.Time, v vec) {
		if t.Before(since) || !t.Before(until) {
			return
		}
		i := int(t.Sub(since) / step)
		pts[i].Counts = pts[i].Counts.Add(v.counts())
	}
	if q.Domain != "" {
		return pts, s.eachDomainRec(ctx, q, since, until, func(_ string, h int64, r *domainRec) {
			if v, ok := r.D[q.Domain]; ok {
				put(hourStart(h), v)
			}
		})
	}
	tok := allToken
	if q.User != "" {
		tok = userToken(q.User)
	}
	for h := hourOf(since); h <= hourOf(until.Add(-time.Nanosecond)); h++ {
		var r minuteRec
		if err := s.read(ctx, minuteKey(tok, h), &r); err != nil {
			return nil, err
		}
		for m, v := range r.M {
			put(hourStart(h).Add(time.Duration(m)*time.Minute), v)
		}
	}
	return pts, nil
}

// Rows returns q's counts per user and recipient domain, whole hours from
// Since's: for each user a row with Domain "" (all domains) and a row per
// domain, busiest first; with a Domain,
// only that domain's rows. Users by name.
func (s *Store) Rows(ctx context.Context, q Query) ([]Row, error) {
	since, until := s.span(q)
	since = since.Truncate(time.Hour)
	sums := map[[2]string]vec{}
	err := s.eachDomainRec(ctx, q, since, until, func(user string, _ int64, r *domainRec) {
		for dom, v := range r.D {
			if q.Domain != "" && dom != q.Domain {
				continue
			}
			if dom != "" {
				x := sums[[2]string{user, dom}]
				x.add(v)
				sums[[2]string{user, dom}] = x
			}
			if q.Domain == "" {
				x := sums[[2]string{user, ""}]
				x.add(v)
				sums[[2]string{user, ""}] = x
			}
		}
	})
	rows := make([]Row, 0, len(sums))
	for k, v := range sums {
		rows = append(rows, Row{User: k[0], Domain: k[1], Counts: v.counts()})
	}
	sort.Slice(rows, func(i, j int) bool {
		a, b := rows[i], rows[j]
		if a.User != b.User {
			return a.User < b.User
		}
		if (a.Domain == "") != (b.Domain == "") {
			return a.Domain == ""
		}
		if va, vb := volume(a.Counts), volume(b.Counts); va != vb {
			return va > vb
		}
		return a.Domain < b.Domain
	})
	return rows, err
}

// volume orders domain rows: recipients with an outcome.
func volume(c Counts) int64 { return c.Delivered + c.Deferred + c.Bounced + c.Suppressed }

// eachDomainRec calls fn with every d.<user>.<hour> record of q's user (or
// of every user listed in the =all keys) for the hours from since to until.
func (s *Store) eachDomainRec(ctx context.Context, q Query, since, until time.Time,
	fn func(user string, hour int64, r *domainRec)) error {
	for h := hourOf(since); h <= hourOf(until.Add(-time.Nanosecond)); h++ {
		users := []string{q.User}
		if q.User == "" {
			var all minuteRec
			if err := s.read(ctx, minuteKey(allToken, h), &all); err != nil {
				return err
			}
			users = all.U
		}
		for _, u := range users {
			var r domainRec
			if err := s.read(ctx, domainKey(userToken(u), h), &r); err != nil {
				return err
			}
			if len(r.D) > 0 {
				fn(u, h, &r)
			}
		}
	}
	return nil
}

// read decodes key into v; a missing key leaves v empty.
func (s *Store) read(ctx context.Context, key string, v any) error {
	e, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stats: read %s: %w", key, err)
	}
	if err := json.Unmarshal(e.Value(), v); err != nil {
		return fmt.Errorf("stats: %s: %w", key, err)
	}
	return nil
}
