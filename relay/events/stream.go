package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// The events stream. Subjects are jr.ev.<kind>.<shard>: shard is two hex
// digits of a hash of the queue id, or "-" for events that belong to no
// message (a refused connection, an operator's suppression change).
//
// Why shards and not the queue id itself: nats-server keeps an index entry
// for every distinct subject a stream holds, about 250 bytes of heap each,
// for as long as the events are retained. With one subject per message a
// week of history at 1 million messages a day would cost gigabytes of
// server memory; with 256 shards it is bounded (kinds × 257 subjects). One
// message's history is still a server-side filter, jr.ev.*.<shard>, reading
// 1/256 of the stream, with the queue id matched on the event itself.
// Streams written before the change hold jr.ev.<kind>.<queue_id>; Tail
// reads both forms.
const (
	StreamName  = "JETRELAY_EVENTS"
	SubjPrefix  = "jr.ev"
	noQueueID   = "-"
	shards      = 256
	dropLogGap  = 10 * time.Second
	defaultBuf  = 4096
	defaultWin  = 256
	defaultWait = 5 * time.Second
)

// Subject returns the events-stream subject of e.
func Subject(e *Event) string {
	return SubjPrefix + "." + token(e.Event) + "." + Shard(e.QueueID)
}

// Shard is the subject token for the events of queue id id.
func Shard(id string) string {
	if id == "" {
		return noQueueID
	}
	h := fnv.New32a()
	h.Write([]byte(id))
	return fmt.Sprintf("%02x", h.Sum32()%shards)
}

// token makes s usable as one subject token.
func token(s string) string {
	if s == "" {
		return "_"
	}
	return strings.Map(func(r rune) rune {
		if r <= ' ' || r == '.' || r == '*' || r == '>' || r == 0x7f {
			return '_'
		}
		return r
	}, s)
}

// StreamOptions size the events stream (config section events).
type StreamOptions struct {
	MaxAge   time.Duration // events.max_age; 0 = unlimited
	MaxBytes int64         // events.max_bytes; 0 = unlimited
	Replicas int           // nats.replicas
}

// StreamConfig is the events stream's configuration. Events are
// observability, not mail: retention is by age and size (oldest dropped
// first), and a single-replica stream uses the async persist mode, so an
// event write never waits for an fsync on the delivery path (a power cut
// can lose the last moments of history, never a message). Replicated
// streams cannot use async persist (nats-server refuses it); their
// durability comes from the replicas instead.
func StreamConfig(o StreamOptions) jetstream.StreamConfig {
	if o.Replicas < 1 {
		o.Replicas = 1
	}
	c := jetstream.StreamConfig{
		Name:        StreamName,
		Description: "jetrelay delivery events (observability; limits retention)",
		Subjects:    []string{SubjPrefix + ".>"},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      o.MaxAge,
		MaxBytes:    o.MaxBytes,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
		AllowDirect: true,
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = -1
	}
	if o.Replicas == 1 {
		c.PersistMode = jetstream.AsyncPersistMode
	}
	return c
}

// EnsureStream creates the events stream or updates its limits. The persist
// mode of an existing stream cannot change: it is kept as it is.
func EnsureStream(ctx context.Context, js jetstream.JetStream, o StreamOptions) (jetstream.Stream, error) {
	cfg := StreamConfig(o)
	if s, err := js.Stream(ctx, StreamName); err == nil {
		cfg.PersistMode = s.CachedInfo().Config.PersistMode
	}
	s, err := js.CreateOrUpdateStream(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("events: stream %s: %w", StreamName, err)
	}
	return s, nil
}

// PublisherOptions configure NewPublisher.
type PublisherOptions struct {
	Conn   *nats.Conn
	Logger zerolog.Logger
	Stream StreamOptions
	// Buffer is how many events may wait for the publisher goroutine
	// (default 4096); more are dropped.
	Buffer int
	// Window bounds the async publishes awaiting their ack (default 256).
	Window int
	// AckWait is how long one publish may wait for its ack (default 5s).
	AckWait time.Duration
	// OnDrop is called once per dropped event (a metrics counter).
	OnDrop func()
	// Attach is for ops commands, whose config may not be the server's:
	// Start uses the events stream as it is and never creates or changes
	// it (a missing stream is Start's error).
	Attach bool
}

// StreamPublisher implements Publisher on the events stream. Publish never
// blocks: an event goes into a bounded buffer, a background goroutine
// publishes it asynchronously with a bounded number of acks outstanding,
// and an event that does not fit, or whose publish fails, is counted as
// dropped (OnDrop, Dropped) and reported in a rate-limited log line (the
// event itself was already logged by the Emitter). Delivery never waits
// for, or fails because of, the events stream.
type StreamPublisher struct {
	o       PublisherOptions
	log     zerolog.Logger
	js      jetstream.JetStream
	mu      sync.RWMutex // guards closed against sends on ch
	closed  bool
	ch      chan *nats.Msg
	futures chan jetstream.PubAckFuture
	window  chan struct{}
	done    chan struct{}
	dropped atomic.Uint64
	lastLog atomic.Int64
	started bool
}

// NewPublisher returns a publisher; call Start before events flow.
func NewPublisher(o PublisherOptions) (*StreamPublisher, error) {
	if o.Conn == nil {
		return nil, errors.New("events: NewPublisher needs a NATS connection")
	}
	if o.Buffer <= 0 {
		o.Buffer = defaultBuf
	}
	if o.Window <= 0 {
		o.Window = defaultWin
	}
	if o.AckWait <= 0 {
		o.AckWait = defaultWait
	}
	js, err := jetstream.New(o.Conn, jetstream.WithPublishAsyncMaxPending(o.Window+1),
		jetstream.WithPublishAsyncTimeout(o.AckWait))
	if err != nil {
		return nil, err
	}
	return &StreamPublisher{
		o: o, log: o.Logger, js: js,
		ch:      make(chan *nats.Msg, o.Buffer),
		futures: make(chan jetstream.PubAckFuture, o.Window),
		window:  make(chan struct{}, o.Window),
		done:    make(chan struct{}),
	}, nil
}

// Start creates (or updates) the events stream, or with Attach only checks
// that it exists, and starts publishing.
func (p *StreamPublisher) Start(ctx context.Context) error {
	if p.o.Attach {
		if _, err := p.js.Stream(ctx, StreamName); err != nil {
			return fmt.Errorf("events: stream %s: %w", StreamName, err)
		}
	} else if _, err := EnsureStream(ctx, p.js, p.o.Stream); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.started || p.closed {
		return errors.New("events: publisher already started or closed")
	}
	p.started = true
	go p.send()
	go p.collect()
	return nil
}

// Publish queues e for the stream without blocking.
func (p *StreamPublisher) Publish(e *Event) {
	data, err := Marshal(e)
	if err != nil {
		p.drop(e.Event, e.QueueID, err.Error())
		return
	}
	msg := &nats.Msg{Subject: Subject(e), Data: data}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		p.drop(e.Event, e.QueueID, "publisher closed")
		return
	}
	select {
	case p.ch <- msg:
	default:
		p.drop(e.Event, e.QueueID, "buffer full")
	}
}

// Dropped returns how many events were dropped so far.
func (p *StreamPublisher) Dropped() uint64 { return p.dropped.Load() }

// Close stops accepting events and waits (up to ctx) until the buffered
// ones are published or dropped. Call it after the components that emit
// events have stopped and before the NATS connection is drained.
func (p *StreamPublisher) Close(ctx context.Context) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	started := p.started
	close(p.ch)
	p.mu.Unlock()
	if !started {
		return nil
	}
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("events: %d event(s) still unpublished at shutdown: %w", len(p.ch)+len(p.window), ctx.Err())
	}
}

// send publishes buffered events, holding at most Window acks outstanding.
func (p *StreamPublisher) send() {
	defer close(p.futures)
	for msg := range p.ch {
		p.window <- struct{}{}
		f, err := p.js.PublishMsgAsync(msg, jetstream.WithExpectStream(StreamName))
		if err != nil {
			<-p.window
			p.dropMsg(msg, err.Error())
			continue
		}
		p.futures <- f
	}
}

// collect waits for each publish's ack in order and frees its window slot.
func (p *StreamPublisher) collect() {
	defer close(p.done)
	for f := range p.futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			p.dropMsg(f.Msg(), err.Error())
		}
		<-p.window
	}
}

func (p *StreamPublisher) dropMsg(msg *nats.Msg, reason string) {
	var e struct {
		Event   string `json:"event"`
		QueueID string `json:"queue_id"`
	}
	if msg != nil {
		_ = json.Unmarshal(msg.Data, &e)
	}
	p.drop(e.Event, e.QueueID, reason)
}

// drop counts a dropped event and logs at most one line per dropLogGap.
func (p *StreamPublisher) drop(kind, queueID, reason string) {
	n := p.dropped.Add(1)
	if p.o.OnDrop != nil {
		p.o.OnDrop()
	}
	now := time.Now().UnixNano()
	last := p.lastLog.Load()
	if now-last < int64(dropLogGap) || !p.lastLog.CompareAndSwap(last, now) {
		return
	}
	p.log.Warn().Str("event", "event_dropped").Str("kind", kind).Str("queue_id", queueID).
		Str("reason", reason).Uint64("dropped_total", n).
		Msg("delivery event not stored in the events stream (delivery is unaffected)")
}

// Tee returns a Publisher handing each event to every non-nil p in turn:
// for example the metrics observer and the stream publisher.
func Tee(ps ...Publisher) Publisher {
	out := make(tee, 0, len(ps))
	for _, p := range ps {
		if p != nil {
			out = append(out, p)
		}
	}
	return out
}

type tee []Publisher

func (t tee) Publish(e *Event) {
	for _, p := range t {
		p.Publish(e)
	}
}
