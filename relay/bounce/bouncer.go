// Package bounce owns what happens when mail cannot be delivered, or the
// sender asked to hear about it: delivery status notifications, VERP
// envelope senders, the asynchronous bounce intake, complaints (ARF feedback
// reports at the intake, complaint.go), and the suppression list.
//
// DSNs (RFC 3461, 3464, 6522). The delivery engine reports outcomes through
// Bouncer's Failed, Delayed and Relayed methods (its Reporter). For each call
// Bouncer writes at most one DSN: a multipart/report listing every recipient
// of that call whose NOTIFY asks for it (RFC 3461 §4.1: default FAILURE,DELAY;
// NEVER silences), and queues it with queue.Enqueue from the null
// reverse-path (IsDSN set), so it is delivered, retried and logged like any
// other message. Never a DSN to the null sender and never a DSN about a DSN
// (RFC 3461 §6.2, RFC 5321 §4.5.5): those are dropped and logged as
// event=dsn status=dropped. Each queued DSN is logged as event=dsn with the
// original's queue_id and the DSN's dsn_id.
//
// Idempotency. A redelivered entry may report the same outcome twice (a
// crash between Reporter call and ack). Each call is keyed by the original
// queue id, the kind and a hash of the recipients reported; a marker under
// that key in the jetrelay_bounce KV bucket, written after the DSN is
// queued, makes a repeat a no-op. The only duplicate window left is a crash
// between Enqueue and the marker write — at-least-once, like delivery itself.
//
// Settings and reload. The Bouncer reads only its Settings (the bounces
// section, plus the host name, DSN sender, data directory, retry.max_age
// and the message size limit, named), built by cmd. Prepare/apply swap
// them as one snapshot (settings.go), together with the other components'
// on SIGHUP: DSNs, VERP minting and the intake never disagree about
// bounces.verp_domain or the max_age a DSN quotes.
//
// Promises: Reporter methods never return an error for mail that must not be
// bounced (they log it); an error means the DSN could not be stored and the
// caller should retry the report (keep the entry leased or redeliver it).
package bounce

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// StateBucket holds VERP records and DSN idempotency markers.
const StateBucket = "jetrelay_bounce"

// stateTTL is how long VERP records and DSN markers are kept: a bounce that
// arrives later than this is matched by hash only.
const stateTTL = 30 * 24 * time.Hour

// Options configure New.
type Options struct {
	Settings Settings
	Queue    *queue.Queue
	Events   *events.Emitter
	Logger   zerolog.Logger
	// Now is the clock (default time.Now); tests inject a fixed one.
	Now func() time.Time
	// NewID returns queue ids for DSNs (default queue.NewID).
	NewID func() string
	// AttachOnly is for ops commands, whose config may not be the
	// server's: the buckets are used as they are (created only if missing),
	// so their TTL and replicas are never changed.
	AttachOnly bool
}

// Bouncer implements the delivery engine's Reporter, VERP, the bounce
// intake and (through its SuppressionList) submission's Suppressor.
type Bouncer struct {
	st     atomic.Pointer[state] // settings in force (settings.go)
	q      *queue.Queue
	events *events.Emitter
	log    zerolog.Logger
	now    func() time.Time
	newID  func() string
	kv     jetstream.KeyValue
	supp   *SuppressionList
	intake *intake
}

// New opens (creating or updating) the jetrelay_bounce and
// jetrelay_suppress buckets and, when bounces.verp_domain is set, loads or
// creates data_dir/bounce.key.
func New(ctx context.Context, o Options) (*Bouncer, error) {
	if o.Queue == nil {
		return nil, errors.New("bounce: Queue is required")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.NewID == nil {
		o.NewID = queue.NewID
	}
	if o.Events == nil {
		o.Events = events.NewEmitter(o.Logger, nil)
	}
	b := &Bouncer{q: o.Queue, events: o.Events, log: o.Logger, now: o.Now, newID: o.NewID}
	st, err := b.newState(o.Settings, nil)
	if err != nil {
		return nil, err
	}
	b.st.Store(st)
	js := o.Queue.JetStream()
	if b.kv, err = openStateBucket(ctx, js, o.Queue.Replicas(), o.AttachOnly); err != nil {
		return nil, err
	}
	so := SuppressionOptions{JetStream: js, Replicas: o.Queue.Replicas(), TTL: o.Settings.SuppressFor.D(),
		Events: o.Events, Now: o.Now}
	if o.AttachOnly {
		b.supp, err = AttachSuppressionList(ctx, so)
	} else {
		b.supp, err = OpenSuppressionList(ctx, so)
	}
	if err != nil {
		return nil, err
	}
	return b, nil
}

func openStateBucket(
	ctx context.Context, js jetstream.JetStream, replicas int, attach bool,
) (jetstream.KeyValue, error) {
	if attach {
		kv, err := js.KeyValue(ctx, StateBucket)
		if err == nil || !errors.Is(err, jetstream.ErrBucketNotFound) {
			return kv, err
		}
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      StateBucket,
		Description: "jetrelay bounces: VERP recipients and DSN idempotency markers",
		History:     1,
		TTL:         stateTTL,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("bounce: bucket %s: %w", StateBucket, err)
	}
	return kv, nil
}

// Suppressions returns the suppression list.
func (b *Bouncer) Suppressions() *SuppressionList { return b.supp }

// Suppressed implements relay/submit's Suppressor. With bounces.suppress
// off it reports nothing as suppressed (the list is kept but not enforced).
func (b *Bouncer) Suppressed(ctx context.Context, addr string) (since time.Time, ok bool, err error) {
	if !b.state().set.SuppressEnabled() {
		return time.Time{}, false, nil
	}
	return b.supp.Suppressed(ctx, addr)
}

// emit stamps e with the clock and emits it.
func (b *Bouncer) emit(e *events.Event) {
	e.Time = b.now().UTC()
	b.events.Emit(e)
}
