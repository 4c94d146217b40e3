package queue

// Operator retries as a cluster-wide signal.
//
// Delivery keeps some marks of a destination in process memory: its
// circuit breaker ("down") and its run of failed attempts (the retry
// pacing that leads to parking; relay/deliver). `jetrelay queue retry`
// runs in another process and on any node, so it tells every delivery
// process through the KV bucket RetryBucket: key = the retried domain
// (RetryAllKey for a retry of every deferred entry), value = when the
// operator asked (RFC 3339). Every delivery process watches the bucket
// and clears the marks a retry is newer than.
//
// Why a KV bucket and not a core NATS subject: the watcher is an ordered
// consumer that resumes after a reconnect, so a process that was
// disconnected while the operator retried still sees it; a plain publish
// would be lost. The keys expire after retryMarkTTL: the marks they clear
// are minutes old at most. Not the park wake-ups' way either: a wake-up
// is leased by one process, this must reach all of them.
//
// The retried entries themselves carry Envelope.Retried, so whichever
// process leases one attempts it even before the signal arrives.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The retry signal's bucket.
const (
	RetryBucket = "jetrelay_retry"
	// RetryAllKey is the key of a retry of every deferred entry (not a
	// domain name: domains never start with "_").
	RetryAllKey  = "_all"
	retryMarkTTL = time.Hour
)

// RetryMark is one operator retry: of Domain ("" for every deferred
// entry), asked for At.
type RetryMark struct {
	Domain string
	At     time.Time
}

// retryBucket returns the bucket, creating it when it does not exist.
func (q *Queue) retryBucket(ctx context.Context) (jetstream.KeyValue, error) {
	kv, err := q.js.KeyValue(ctx, RetryBucket)
	if err == nil || !errors.Is(err, jetstream.ErrBucketNotFound) {
		return kv, err
	}
	kv, err = q.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      RetryBucket,
		Description: "jetrelay operator retries: clear delivery's down marks on every node",
		History:     1,
		TTL:         retryMarkTTL,
		Storage:     jetstream.FileStorage,
		Replicas:    max(q.opts.Replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("queue: bucket %s: %w", RetryBucket, err)
	}
	return kv, nil
}

// MarkRetried tells every delivery process that an operator retried
// m.Domain's entries (every deferred entry when m.Domain is "") at m.At.
func (q *Queue) MarkRetried(ctx context.Context, m RetryMark) error {
	key := RetryAllKey
	if m.Domain != "" {
		if !ValidDomain(m.Domain) {
			return fmt.Errorf("%w: %q", ErrInvalidDomain, m.Domain)
		}
		key = strings.ToLower(m.Domain)
	}
	kv, err := q.retryBucket(ctx)
	if err != nil {
		return err
	}
	if _, err := kv.Put(ctx, key, []byte(m.At.UTC().Format(time.RFC3339Nano))); err != nil {
		return fmt.Errorf("queue: mark retry of %s: %w", key, err)
	}
	return nil
}

// WatchRetried delivers the operator retries marked from now on until
// ctx ends (then the channel is closed). Unreadable values are skipped.
func (q *Queue) WatchRetried(ctx context.Context) (<-chan RetryMark, error) {
	kv, err := q.retryBucket(ctx)
	if err != nil {
		return nil, err
	}
	w, err := kv.WatchAll(ctx, jetstream.UpdatesOnly(), jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("queue: watch %s: %w", RetryBucket, err)
	}
	out := make(chan RetryMark)
	go func() {
		defer close(out)
		defer func() { _ = w.Stop() }()
		for {
			var e jetstream.KeyValueEntry
			var ok bool
			select {
			case <-ctx.Done():
				return
			case e, ok = <-w.Updates():
			}
			if !ok {
				return
			}
			if e == nil { // the end of the initial values (none with UpdatesOnly)
				continue
			}
			m, err := retryMarkOf(e)
			if err != nil {
				q.log.Warn().Err(err).Str("event", "retry_mark_invalid").Msg("skipping an unreadable retry mark")
				continue
			}
			select {
			case out <- m:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// retryMarkOf reads a bucket entry.
func retryMarkOf(e jetstream.KeyValueEntry) (RetryMark, error) {
	at, err := time.Parse(time.RFC3339Nano, string(e.Value()))
	if err != nil {
		return RetryMark{}, fmt.Errorf("queue: retry mark %s: %w", e.Key(), err)
	}
	m := RetryMark{At: at}
	if e.Key() != RetryAllKey {
		m.Domain = e.Key()
	}
	return m, nil
}
