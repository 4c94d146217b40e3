package stats

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	// ConsumerName is the durable consumer on the events stream that
	// every node's aggregator pulls from.
	ConsumerName = "stats"
	// ackWait: a pulled event that is neither written and acknowledged
	// nor renewed within it goes to another node.
	ackWait = time.Minute
	// maxHeld bounds the events a node holds unacknowledged (and the
	// consumer's MaxAckPending per node); at it the node stops pulling
	// until it has written.
	maxHeld = 10000
	// pullBatch is how many events one pull asks for.
	pullBatch = 500
	// casAttempts bounds the compare-and-set retries of one key.
	casAttempts = 20
	// writeTimeout bounds one flush.
	writeTimeout = 10 * time.Second
	// futureSlack: an event stamped later than now plus this counts now.
	futureSlack = time.Minute
	// retryLogEvery rate-limits the aggregator's error lines.
	retryLogEvery = time.Minute
)

// errConflicts: a key kept changing under this node's writes.
var errConflicts = errors.New("stats: too many concurrent writes to one key")

// consumerConfig is the aggregators' shared durable consumer. It starts
// at the oldest event kept, so a first start counts the history the
// events stream still holds.
func consumerConfig() jetstream.ConsumerConfig {
	subjects := make([]string, len(countedKinds))
	for i, k := range countedKinds {
		subjects[i] = events.SubjPrefix + "." + k + ".>"
	}
	return jetstream.ConsumerConfig{
		Durable:        ConsumerName,
		Description:    "jetrelay stats: counts per user and domain (relay/stats)",
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        ackWait,
		MaxDeliver:     -1,
		MaxAckPending:  4 * maxHeld,
		FilterSubjects: subjects,
	}
}

// Run consumes the events stream and writes the counts until ctx ends,
// then writes what it holds (bounded by writeTimeout) and returns nil.
// Errors (JetStream away, the consumer deleted) are logged and retried.
func (s *Store) Run(ctx context.Context) error {
	var lastLog time.Time
	wait := 100 * time.Millisecond
	for {
		err := s.consume(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(lastLog) > retryLogEvery {
			lastLog = time.Now()
			s.log.Warn().Err(err).Str("event", "stats_unavailable").
				Msg("stats aggregation paused; events wait in the stream and are counted when it resumes")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// consume pulls events through one iterator until ctx ends or the
// iterator fails.
func (s *Store) consume(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, writeTimeout)
	cons, err := s.js.CreateOrUpdateConsumer(cctx, events.StreamName, consumerConfig())
	cancel()
	if err != nil {
		return fmt.Errorf("stats: consumer %s: %w", ConsumerName, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(pullBatch))
	if err != nil {
		return err
	}
	msgs, errc, stop := make(chan jetstream.Msg), make(chan error, 1), make(chan struct{})
	defer close(stop)
	defer it.Stop()
	go func() {
		for {
			m, err := it.Next()
			if errors.Is(err, jetstream.ErrNoHeartbeat) {
				continue // JetStream away: the iterator pulls again by itself
			}
			if err != nil {
				errc <- err
				return
			}
			select {
			case msgs <- m:
			case <-stop:
				return
			}
		}
	}()
	b := newBatch()
	tick := time.NewTicker(s.o.Interval)
	defer tick.Stop()
	for {
		in := msgs
		if len(b.acks) >= maxHeld {
			in = nil
		}
		select {
		case m := <-in:
			s.take(b, m)
		case <-tick.C:
			s.flush(ctx, b)
		case err := <-errc:
			s.flush(context.WithoutCancel(ctx), b)
			return err
		case <-ctx.Done():
			s.flush(context.WithoutCancel(ctx), b)
			return ctx.Err()
		}
	}
}

// batch is what a node pulled and has not yet written.
type batch struct {
	min   map[string]*minuteRec
	dom   map[string]*domainRec
	users map[string]bool
	// acks are the reply subjects of the events taken: what acknowledges
	// (or renews) each once its sums are written. Only the subject is
	// kept: the pulled message with its payload, header map and reply
	// would keep ~1.5 KB each in the heap, over 15 MB at maxHeld.
	acks     []string
	progress time.Time // when acks were last renewed (or the first taken)
}

// JetStream's acknowledgement protocol: the body published to an event's
// reply subject (what jetstream.Msg's Ack and InProgress send).
var (
	ackBody      = []byte("+ACK")
	progressBody = []byte("+WPI")
)

func newBatch() *batch {
	return &batch{min: map[string]*minuteRec{}, dom: map[string]*domainRec{}, users: map[string]bool{}}
}

// take adds one pulled event to b. Events that count nothing, cannot be
// read or are older than the retention are acknowledged with the batch.
func (s *Store) take(b *batch, m jetstream.Msg) {
	if len(b.acks) == 0 {
		b.progress = time.Now()
	}
	b.acks = append(b.acks, m.Reply())
	e, err := decodeEvent(m.Data())
	if err != nil {
		return
	}
	c, ok := classify(&e)
	if !ok {
		return
	}
	now := s.o.Now()
	at := e.Time
	if at.IsZero() || at.After(now.Add(futureSlack)) {
		at = now
	}
	if at.Before(now.Add(-s.o.Retention)) {
		return
	}
	h, minute := hourOf(at), int(at.Unix()%3600/60)
	tok := userToken(c.user)
	for _, k := range []string{minuteKey(tok, h), minuteKey(allToken, h)} {
		r := b.min[k]
		if r == nil {
			r = &minuteRec{M: map[int]vec{}}
			b.min[k] = r
		}
		x := r.M[minute]
		x.add(c.v)
		r.M[minute] = x
	}
	all := b.min[minuteKey(allToken, h)]
	if len(all.U) < maxUsers && !slices.Contains(all.U, c.user) {
		all.U = append(all.U, c.user)
	}
	dk := domainKey(tok, h)
	if b.dom[dk] == nil {
		b.dom[dk] = &domainRec{D: map[string]vec{}}
	}
	for dom, v := range byDomain(c, &e) {
		x := b.dom[dk].D[dom]
		x.add(v)
		b.dom[dk].D[dom] = x
	}
	b.users[c.user] = true
}

// byDomain splits what c counts over recipient domains: an accepted event
// counts each listed recipient under its domain (recipients it does not
// list, from events before the list existed, under ""); every other
// event counts under its one domain.
func byDomain(c counted, e *events.Event) map[string]vec {
	if e.Event != events.Accepted || len(e.Rcpts) == 0 {
		return map[string]vec{c.domain: c.v}
	}
	out := map[string]vec{}
	left := c.v[0]
	for _, r := range e.Rcpts {
		if left == 0 {
			break
		}
		d := rcptDomain(&events.Event{Rcpt: r})
		x := out[d]
		x[0]++
		out[d] = x
		left--
	}
	if left > 0 {
		x := out[""]
		x[0] += left
		out[""] = x
	}
	return out
}

// flush writes b's sums, then acknowledges its events. A key that fails
// keeps its sum for the next flush, and the events stay unacknowledged
// (renewed) until every sum is written: an event is acknowledged only
// after what it counts is stored.
func (s *Store) flush(ctx context.Context, b *batch) {
	if len(b.acks) == 0 {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	nc := s.js.Conn()
	var failed error
	for _, k := range sortedKeys(b.min) {
		if err := s.apply(wctx, k, b.min[k]); err != nil {
			failed = err
			continue
		}
		delete(b.min, k)
	}
	for _, k := range sortedKeys(b.dom) {
		if err := s.apply(wctx, k, b.dom[k]); err != nil {
			failed = err
			continue
		}
		delete(b.dom, k)
	}
	if failed != nil {
		s.log.Warn().Err(failed).Str("event", "stats_write_failed").Int("events", len(b.acks)).
			Msg("stats not written; retrying, the events stay unacknowledged")
		if time.Since(b.progress) > ackWait/3 {
			publishEach(nc, b.acks, progressBody)
			b.progress = time.Now()
		}
		return
	}
	publishEach(nc, b.acks, ackBody)
	_ = nc.FlushTimeout(writeTimeout)
	users := make([]string, 0, len(b.users))
	for u := range b.users {
		users = append(users, u)
	}
	sort.Strings(users)
	*b = *newBatch()
	if s.o.AfterFlush != nil && len(users) > 0 {
		s.o.AfterFlush(ctx, users)
	}
}

// publishEach sends body to every reply subject (none to an empty one).
func publishEach(nc *nats.Conn, replies []string, body []byte) {
	for _, r := range replies {
		if r != "" {
			_ = nc.Publish(r, body)
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// merger is a record that adds another of its kind.
type merger[T any] interface {
	*T
	merge(*T)
}

// apply adds d to key by compare-and-set: it tries the revision this node
// last wrote first (no read), and reads again after a lost race.
func (s *Store) apply(ctx context.Context, key string, d any) error {
	for attempt := range casAttempts {
		s.mu.Lock()
		c, ok := s.known[key]
		s.mu.Unlock()
		if !ok || attempt > 0 {
			e, err := s.kv.Get(ctx, key)
			switch {
			case errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted):
				c = cached{}
			case err != nil:
				return err
			default:
				c = cached{rev: e.Revision(), data: e.Value()}
			}
		}
		data, err := mergeInto(c.data, d)
		if err != nil {
			return err
		}
		var rev uint64
		if c.rev == 0 {
			rev, err = s.kv.Create(ctx, key, data)
		} else {
			rev, err = s.kv.Update(ctx, key, data, c.rev)
		}
		if err == nil {
			s.remember(key, cached{rev: rev, data: data})
			return nil
		}
		if !queue.IsConflict(err) {
			return err
		}
	}
	return errConflicts
}

// mergeInto decodes old (a record of d's kind, or nothing), adds d and
// encodes the sum.
func mergeInto(old []byte, d any) ([]byte, error) {
	switch d := d.(type) {
	case *minuteRec:
		return mergeRec(old, d)
	case *domainRec:
		return mergeRec(old, d)
	}
	return nil, fmt.Errorf("stats: no record type %T", d)
}

func mergeRec[T any, P merger[T]](old []byte, d P) ([]byte, error) {
	var r T
	if len(old) > 0 {
		if err := json.Unmarshal(old, &r); err != nil {
			return nil, err
		}
	}
	P(&r).merge(d)
	return json.Marshal(&r)
}

// remember keeps the value this node wrote, bounded (the next write of a
// forgotten key reads it first).
func (s *Store) remember(key string, c cached) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.known) >= 4096 {
		clear(s.known)
	}
	s.known[key] = c
}
