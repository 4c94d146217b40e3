package msgindex

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// The index bucket: a KV bucket whose keys are <hour>.<minute>.<queue id>,
// hour and minute being when the queue id was minted (UTC; queue ids begin
// with their milliseconds), so one hour's or one minute's summaries are
// one subject filter.
const (
	Bucket           = "jetrelay_msgindex"
	bucketStream     = "KV_" + Bucket
	hourLayout       = "2006010215"
	defaultRetention = 7 * 24 * time.Hour
	defaultMaxBytes  = 128 << 20
	minDuplicates    = time.Second
)

// Options configure Open.
type Options struct {
	// Replicas of the index bucket (nats.replicas).
	Replicas int
	// Retention is how long a summary is kept after its last update:
	// events.max_age (0 there = unlimited, here a week).
	Retention time.Duration
	// MaxBytes bounds the bucket (events.index.max_bytes, default
	// 128 MiB, about 190,000 summaries; the postings get half of it
	// besides); the least recently updated summaries go first. Each
	// summary is a subject: ~205 B of the embedded server's heap.
	MaxBytes int64
	Log      zerolog.Logger
}

// Index is the message index: Run keeps it up to date, Search and Get
// read it. Its methods are safe for concurrent use.
type Index struct {
	o  Options
	js jetstream.JetStream
	kv jetstream.KeyValue
}

// StreamConfig is the index bucket's stream: a KV bucket (one value per
// key, direct gets) whose oldest values are dropped when it is full
// rather than refusing new ones, kept Retention after the last update.
func StreamConfig(o Options) jetstream.StreamConfig {
	o = o.withDefaults()
	dup := 2 * time.Minute
	if o.Retention < dup {
		dup = max(o.Retention/2, minDuplicates)
	}
	return jetstream.StreamConfig{
		Name:              bucketStream,
		Description:       "jetrelay message summaries for the console search (derived from " + events.StreamName + ")",
		Subjects:          []string{"$KV." + Bucket + ".>"},
		MaxMsgsPerSubject: 1,
		MaxBytes:          o.MaxBytes,
		MaxAge:            o.Retention,
		Duplicates:        dup,
		Discard:           jetstream.DiscardOld,
		Storage:           jetstream.FileStorage,
		Replicas:          o.Replicas,
		AllowRollup:       true,
		DenyDelete:        true,
		AllowDirect:       true,
		MaxMsgSize:        maxRecord,
	}
}

func (o Options) withDefaults() Options {
	if o.Replicas < 1 {
		o.Replicas = 1
	}
	if o.Retention <= 0 {
		o.Retention = defaultRetention
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = defaultMaxBytes
	}
	return o
}

// Open creates or updates the index bucket and returns the index.
func Open(ctx context.Context, js jetstream.JetStream, o Options) (*Index, error) {
	o = o.withDefaults()
	for _, cfg := range []jetstream.StreamConfig{StreamConfig(o), PostingsConfig(o)} {
		if err := ensureStream(ctx, js, cfg); err != nil {
			return nil, err
		}
	}
	kv, err := js.KeyValue(ctx, Bucket)
	if err != nil {
		return nil, fmt.Errorf("msgindex: bucket %s: %w", Bucket, err)
	}
	return &Index{o: o, js: js, kv: kv}, nil
}

// ensureStream creates or updates one of the index's streams. Like the
// events stream, a single-replica index writes in the async persist mode
// (no fsync per summary: the index is derived from the events and
// rebuilt from them); an existing stream keeps the mode it has (it cannot
// change).
func ensureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) error {
	if cfg.Replicas == 1 {
		cfg.PersistMode = jetstream.AsyncPersistMode
	}
	if s, err := js.Stream(ctx, cfg.Name); err == nil {
		cfg.PersistMode = s.CachedInfo().Config.PersistMode
	}
	if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("msgindex: stream %s: %w", cfg.Name, err)
	}
	return nil
}

// Get returns the summary of one message.
func (x *Index) Get(ctx context.Context, queueID string) (Summary, error) {
	s, err := x.load(ctx, queueID)
	if err != nil {
		return Summary{}, err
	}
	if s.rec == nil {
		return Summary{}, fmt.Errorf("msgindex: summary of %s unreadable", queueID)
	}
	return s.rec.Summary, nil
}

// load reads the stored summary of queueID (ErrNotFound when there is
// none); an unreadable one has no record.
func (x *Index) load(ctx context.Context, queueID string) (stored, error) {
	k, ok := key(queueID)
	if !ok {
		return stored{}, ErrNotFound
	}
	e, err := x.kv.Get(ctx, k)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return stored{}, ErrNotFound
	}
	if err != nil {
		return stored{}, fmt.Errorf("msgindex: get %s: %w", queueID, err)
	}
	s := stored{rev: e.Revision(), raw: e.Value()}
	var r record
	if err := json.Unmarshal(e.Value(), &r); err == nil {
		s.rec = &r
	}
	return s, nil
}

// key is the bucket key of a queue id; ok is false for strings that are
// not queue ids.
func key(queueID string) (string, bool) {
	t, ok := idTime(queueID)
	if !ok {
		return "", false
	}
	return minuteToken(t) + "." + queueID, true
}

func hourToken(t time.Time) string { return t.UTC().Format(hourLayout) }

// minuteToken is "<hour>.<minute>": keys are <hour>.<minute>.<queue id>,
// so an hour is one filter (<hour>.>) and so is a minute (<hour>.<minute>.*).
func minuteToken(t time.Time) string { return hourToken(t) + "." + t.UTC().Format("04") }

// idTime is when a queue id was minted: its first ten characters are
// milliseconds in Crockford base32 (queue.NewID).
func idTime(id string) (time.Time, bool) {
	if !queue.ValidID(id) {
		return time.Time{}, false
	}
	var ms int64
	for i := 0; i < idTimeChars; i++ {
		ms = ms<<5 | int64(crockfordValue(id[i]))
	}
	return time.UnixMilli(ms).UTC(), true
}

const (
	idTimeChars = 10
	crockford   = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
)

func crockfordValue(c byte) int { return bytes.IndexByte([]byte(crockford), c) }

// idFloor is the smallest queue id minted at t or later: ids compare as
// strings in the order of their times.
func idFloor(t time.Time) string {
	ms := uint64(max(t.UnixMilli(), 0))
	var b [22]byte
	for i := idTimeChars - 1; i >= 0; i-- {
		b[i] = crockford[ms&31]
		ms >>= 5
	}
	for i := idTimeChars; i < len(b); i++ {
		b[i] = '0'
	}
	return string(b[:])
}

// History returns every event of one message in stream order (events.Tail
// with Filter{ID: queueID}): the message page's history.
func History(ctx context.Context, js jetstream.JetStream, queueID string) ([]events.Record, error) {
	if queueID == "" {
		return nil, ErrNotFound
	}
	var out []events.Record
	err := events.Tail(ctx, js, events.Filter{ID: queueID}, func(r events.Record) error {
		if len(out) >= maxHistory {
			return errHistoryFull
		}
		out = append(out, r)
		return nil
	})
	if err != nil && !errors.Is(err, errHistoryFull) {
		return nil, err
	}
	return out, nil
}

// maxHistory bounds the events History returns for one message.
const maxHistory = 2000

var errHistoryFull = errors.New("history full")
