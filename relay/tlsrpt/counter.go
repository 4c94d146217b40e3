package tlsrpt

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// ConsumerName is the durable consumer every node's Counter shares.
const ConsumerName = "jetrelay_tlsrpt"

// Counter defaults.
const (
	DefaultFlush = 10 * time.Second
	defaultBatch = 1000
	// ackWait must cover one fetch plus one flush; a node that dies with
	// events unacked hands them to another node after it.
	ackWait = 2 * time.Minute
	// maxAckPending bounds the events held unacked across the cluster.
	maxAckPending = 20000
	retryPause    = time.Second
)

// CounterOptions configure NewCounter.
type CounterOptions struct {
	JetStream jetstream.JetStream
	KV        jetstream.KeyValue // from OpenBucket
	// Flush is how long events are summed in memory before the KV
	// update (0: DefaultFlush).
	Flush time.Duration
	Batch int // events per fetch (0: 1000)
	// SourceIPs maps egress source names (delivery.sources, the events'
	// source) to their addresses for sending-mta-ip; DefaultIP is
	// delivery.source_ip for events without a source ("": left out).
	SourceIPs map[string]string
	DefaultIP string
	Logger    zerolog.Logger
}

// Counter adds delivery events up into the bucket's day counts.
type Counter struct {
	o    CounterOptions
	cons jetstream.Consumer
}

// NewCounter creates (or joins) the shared durable consumer on the events
// stream. A new consumer starts with today's events (UTC), so the first
// day counted is complete when the stream still holds it.
func NewCounter(ctx context.Context, o CounterOptions) (*Counter, error) {
	if o.JetStream == nil || o.KV == nil {
		return nil, errors.New("tlsrpt: NewCounter needs JetStream and KV")
	}
	if o.Flush <= 0 {
		o.Flush = DefaultFlush
	}
	if o.Batch <= 0 {
		o.Batch = defaultBatch
	}
	s, err := o.JetStream.Stream(ctx, events.StreamName)
	if err != nil {
		return nil, fmt.Errorf("tlsrpt: events stream: %w", err)
	}
	cons, err := s.Consumer(ctx, ConsumerName)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		start := time.Now().UTC().Truncate(24 * time.Hour)
		cons, err = s.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
			Durable: ConsumerName, Description: "jetrelay: TLS-RPT session counts (RFC 8460)",
			FilterSubject: events.SubjPrefix + "." + events.Delivery + ".>",
			DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &start,
			AckPolicy: jetstream.AckExplicitPolicy, AckWait: ackWait, MaxAckPending: maxAckPending,
			MaxDeliver: -1,
		})
	}
	if err != nil {
		return nil, fmt.Errorf("tlsrpt: consumer %s: %w", ConsumerName, err)
	}
	return &Counter{o: o, cons: cons}, nil
}

// Run counts until ctx ends: fetch up to Batch events or for Flush, sum
// them, fold the sums into KV, ack. A fetch error is logged and retried.
func (c *Counter) Run(ctx context.Context) error {
	for ctx.Err() == nil {
		if err := c.round(ctx); err != nil && ctx.Err() == nil {
			c.o.Logger.Warn().Err(err).Str("event", "tlsrpt_count").Msg("TLS-RPT counting failed; retrying")
			select {
			case <-ctx.Done():
			case <-time.After(retryPause):
			}
		}
	}
	return ctx.Err()
}

// pending is one key's sum and the events it holds.
type pending struct {
	counts *DomainCounts
	msgs   []jetstream.Msg
}

// round is one fetch and one flush.
func (c *Counter) round(ctx context.Context) error {
	batch, err := c.cons.Fetch(c.o.Batch, jetstream.FetchMaxWait(c.o.Flush))
	if err != nil {
		return err
	}
	sums := map[string]*pending{}
	var skip []jetstream.Msg
	for m := range batch.Messages() {
		e, err := decodeEvent(m.Data())
		s, ok := session{}, err == nil
		if ok {
			s, ok = sessionOf(&e)
		}
		if !ok {
			skip = append(skip, m)
			continue
		}
		if !s.ok {
			s.failure.SendingIP = c.sendingIP(e.Source)
		}
		key := countKey(s.day, s.domain)
		p := sums[key]
		if p == nil {
			p = &pending{counts: &DomainCounts{Domain: s.domain, Day: s.day}}
			sums[key] = p
		}
		p.counts.add(s)
		p.msgs = append(p.msgs, m)
	}
	c.flush(ctx, sums)
	for _, m := range skip {
		_ = m.Ack()
	}
	if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}

// flush folds each sum into KV and acks its events; a key that could not
// be updated naks its events, which are counted again on redelivery.
func (c *Counter) flush(ctx context.Context, sums map[string]*pending) {
	for key, p := range sums {
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ackWait/4)
		err := addTo(wctx, c.o.KV, p.counts)
		cancel()
		if err != nil {
			c.o.Logger.Warn().Err(err).Str("event", "tlsrpt_count").Str("key", key).Int("sessions", len(p.msgs)).
				Msg("TLS-RPT counts not stored; the events are counted again when redelivered")
			for _, m := range p.msgs {
				_ = m.NakWithDelay(retryPause)
			}
			continue
		}
		for _, m := range p.msgs {
			_ = m.Ack()
		}
	}
}

// sendingIP is the address of egress source name (RFC 8460 §4.3.2's
// sending-mta-ip), or "" when unknown.
func (c *Counter) sendingIP(name string) string {
	if name == "" {
		return c.o.DefaultIP
	}
	return c.o.SourceIPs[name]
}
