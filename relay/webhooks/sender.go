package webhooks

import (
	"cmp"
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

const (
	streamName = events.StreamName
	// fetchSlice bounds one pull request, so a stopping sender stops soon
	// and a batch is gathered for about batch.wait after its first event.
	fetchSlice   = time.Second
	minFetchWait = 50 * time.Millisecond
	// pinProbeWait is the keep-alive pull's expiry (see holdPin).
	pinProbeWait = 100 * time.Millisecond
	statusWrite  = 5 * time.Second
)

// sender is one webhook's goroutine: fetch a batch, POST it until a 2xx
// or until its events are older than retry.max_age, ack it, repeat.
type sender struct {
	hook   Hook
	o      Options
	log    zerolog.Logger
	cancel context.CancelFunc
	done   chan struct{}
}

// item is one event of a batch that the webhook wants.
type item struct {
	p      Payload
	stored time.Time // when the events stream stored it (retry.max_age)
}

func (s *sender) stop() {
	s.cancel()
	<-s.done
}

func (s *sender) run(ctx context.Context) {
	defer close(s.done)
	cons, ok := s.consumer(ctx)
	if !ok {
		return
	}
	s.log.Info().Str("event", "webhook_started").Str("url", s.hook.URL).Msg("webhook sender started")
	for ctx.Err() == nil {
		msgs, err := s.collect(ctx, cons)
		if ctx.Err() != nil {
			nakAll(msgs)
			break
		}
		if len(msgs) > 0 {
			s.deliver(ctx, cons, msgs)
		}
		if err != nil {
			s.log.Warn().Str("event", "webhook_fetch_failed").Err(err).Msg("fetching webhook events failed; retrying")
			if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrConsumerDeleted) {
				if cons, ok = s.consumer(ctx); !ok {
					return
				}
			}
			sleep(ctx, s.o.RetryBase)
		}
	}
	s.release()
}

// slice is one pull request's expiry: at most fetchSlice and a quarter
// of AckWait, so a gathering batch's first events never time out.
func (s *sender) slice() time.Duration {
	return max(min(fetchSlice, s.o.AckWait/4), minFetchWait)
}

// ackWait is the consumer's AckWait: Options.AckWait, or longer when the
// webhook gathers its batches for longer (they are acked only after).
func (s *sender) ackWait() time.Duration {
	return max(s.o.AckWait, 2*(s.hook.BatchWait+s.slice()))
}

// consumerConfig is the webhook's durable pull consumer: only the subjects
// of its event types, new events from its creation on, explicit acks, one
// batch outstanding, and one pinned sender across the cluster.
func (s *sender) consumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable: consumerName(s.hook.Name), Description: "jetrelay webhook " + s.hook.Name,
		FilterSubjects: FilterSubjects(s.hook.Types), DeliverPolicy: jetstream.DeliverNewPolicy,
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: s.ackWait(), MaxDeliver: -1,
		MaxAckPending: s.hook.BatchMax, MaxRequestBatch: s.hook.BatchMax,
		PriorityPolicy: jetstream.PriorityPolicyPinned, PinnedTTL: max(s.o.PinnedTTL, 2*s.ackWait()),
		PriorityGroups: []string{priorityGroup},
	}
}

// consumer creates or updates the consumer, retrying until ctx ends.
func (s *sender) consumer(ctx context.Context) (jetstream.Consumer, bool) {
	for fails := 0; ; fails++ {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		cons, err := s.o.JetStream.CreateOrUpdateConsumer(cctx, streamName, s.consumerConfig())
		cancel()
		if err == nil {
			return cons, true
		}
		s.log.Warn().Str("event", "webhook_consumer_failed").Err(err).Msg("webhook consumer not ready; retrying")
		if !sleep(ctx, s.backoff(fails)) {
			return nil, false
		}
	}
}

// collect gathers up to batch.max events, for about batch.wait after the
// first one. Only the pinned sender gets any; the others' pulls expire.
func (s *sender) collect(ctx context.Context, cons jetstream.Consumer) ([]jetstream.Msg, error) {
	var msgs []jetstream.Msg
	var deadline time.Time
	for ctx.Err() == nil && len(msgs) < s.hook.BatchMax {
		slice := s.slice()
		if !deadline.IsZero() {
			left := time.Until(deadline)
			if left <= 0 {
				break
			}
			slice = min(slice, left)
		}
		b, err := cons.Fetch(s.hook.BatchMax-len(msgs), jetstream.FetchMaxWait(max(slice, minFetchWait)),
			jetstream.FetchPriorityGroup(priorityGroup))
		if err != nil {
			return msgs, err
		}
		for m := range b.Messages() {
			msgs = append(msgs, m)
			if deadline.IsZero() {
				deadline = time.Now().Add(s.hook.BatchWait)
			}
		}
		if err := b.Error(); err != nil && !errors.Is(err, jetstream.ErrPinIDMismatch) &&
			!errors.Is(err, jetstream.ErrNoMessages) {
			return msgs, err
		}
	}
	sortByStream(msgs)
	return msgs, nil
}

// sortByStream puts a batch in stream order: redeliveries after a node
// died come back in the order their ack timers ran out, which need not be
// the stream's.
func sortByStream(msgs []jetstream.Msg) {
	seq := func(m jetstream.Msg) uint64 {
		if meta, err := m.Metadata(); err == nil {
			return meta.Sequence.Stream
		}
		return 0
	}
	slices.SortStableFunc(msgs, func(a, b jetstream.Msg) int { return cmp.Compare(seq(a), seq(b)) })
}

// deliver POSTs the wanted events of msgs until they are accepted or too
// old, then acks the whole batch. When ctx ends first, the batch is
// handed back (nak) for the next sender.
func (s *sender) deliver(ctx context.Context, cons jetstream.Consumer, msgs []jetstream.Msg) {
	items := s.items(msgs)
	stopKeep := s.keepAlive(cons, msgs)
	for fails := 0; len(items) > 0; fails++ {
		start := time.Now()
		err := Post(ctx, s.o.Client, s.hook, payloadsOf(items))
		s.o.Metrics.observe(s.hook.Name, time.Since(start), len(items), err == nil)
		if err == nil {
			s.succeeded(len(items))
			break
		}
		if ctx.Err() != nil {
			stopKeep()
			nakAll(msgs)
			return
		}
		items = s.dropAged(items, err)
		s.failed(err, fails+1, len(items))
		if len(items) > 0 && !sleep(ctx, s.backoff(fails)) {
			stopKeep()
			nakAll(msgs)
			return
		}
	}
	stopKeep()
	for _, m := range msgs {
		_ = m.Ack()
	}
}

// items decodes msgs and keeps the events the webhook wants.
func (s *sender) items(msgs []jetstream.Msg) []item {
	var out []item
	for _, m := range msgs {
		meta, err := m.Metadata()
		if err != nil {
			continue
		}
		var e events.Event
		if events.Decode(m.Data(), &e, events.AllFields) != nil {
			continue
		}
		typ := TypeOf(&e)
		if !s.hook.wants(typ, e.User) {
			continue
		}
		rec := events.Record{Seq: meta.Sequence.Stream, Time: meta.Timestamp, Event: &e}
		out = append(out, item{p: NewPayload(typ, rec), stored: meta.Timestamp})
	}
	return out
}

// wants reports whether the hook sends an event of type typ and user.
func (h Hook) wants(typ, user string) bool {
	if typ == "" || (len(h.Types) > 0 && !slices.Contains(h.Types, typ)) {
		return false
	}
	return len(h.Users) == 0 || slices.Contains(h.Users, user)
}

func payloadsOf(items []item) []Payload {
	out := make([]Payload, len(items))
	for i, it := range items {
		out[i] = it.p
	}
	return out
}

// dropAged drops the events stored longer than retry.max_age ago (the
// oldest come first) after a failed POST.
func (s *sender) dropAged(items []item, cause error) []item {
	cut := time.Now().Add(-s.hook.MaxAge)
	n := 0
	for n < len(items) && items[n].stored.Before(cut) {
		n++
	}
	if n == 0 {
		return items
	}
	s.o.Metrics.drop(s.hook.Name, n)
	s.log.Error().Str("event", "webhook_dropped").Int("events", n).Str("first_event_id", items[0].p.EventID).
		Str("last_event_id", items[n-1].p.EventID).Str("reason", cause.Error()).
		Msg("webhook events dropped: the endpoint failed for longer than retry.max_age")
	return items[n:]
}

// keepAlive keeps the batch and the pin while it is being sent: every
// third of AckWait (or PinnedTTL) it marks the batch in progress and sends
// a pull request that cannot be served (holdPin). The returned function
// stops it and waits.
func (s *sender) keepAlive(cons jetstream.Consumer, msgs []jetstream.Msg) func() {
	every := s.ackWait() / 3
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				// Oldest first: the server redelivers in the order the
				// ack timers run out, so a batch whose sender died comes
				// back to the next one in stream order (collect sorts too).
				for _, m := range msgs {
					_ = m.InProgress()
				}
				holdPin(cons)
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(done)
			wg.Wait()
		})
	}
}

// holdPin renews the sender's pin (nats-server resets a pin's TTL on every
// pull request carrying the pin id) without taking events: a request of
// at most 1 byte is refused for any message (409), which stays for the
// next fetch. A request without events to offer just expires.
func holdPin(cons jetstream.Consumer) {
	b, err := cons.Fetch(1, jetstream.FetchMaxBytes(1), jetstream.FetchMaxWait(pinProbeWait),
		jetstream.FetchPriorityGroup(priorityGroup))
	if err != nil {
		return
	}
	for m := range b.Messages() {
		_ = m.Nak() // cannot happen: no event fits in one byte
	}
}

// release hands the pin back on a clean stop, so another node's sender
// goes on at once rather than after PinnedTTL.
func (s *sender) release() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := s.o.JetStream.Stream(ctx, streamName)
	if err == nil {
		err = st.UnpinConsumer(ctx, consumerName(s.hook.Name), priorityGroup)
	}
	if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		s.log.Debug().Err(err).Msg("webhook pin not released; another node takes over after pinned_ttl")
	}
	s.log.Info().Str("event", "webhook_stopped").Msg("webhook sender stopped")
}

// backoff is the wait after the n-th failure (from 0): RetryBase doubled
// per failure, at most RetryMax, with ±20 % jitter.
func (s *sender) backoff(n int) time.Duration {
	d := s.o.RetryBase << min(n, 20)
	if d <= 0 || d > s.o.RetryMax {
		d = s.o.RetryMax
	}
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

func nakAll(msgs []jetstream.Msg) {
	for _, m := range msgs {
		_ = m.Nak()
	}
}

// sleep waits d or until ctx ends; false when ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
