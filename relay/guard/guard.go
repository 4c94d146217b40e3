// Package guard is the bounce-rate guard (issue 18): per user, over a
// window, hard bounces / (delivered + hard bounces) and complaints /
// delivered, counted cluster-wide by relay/stats. Past a warn threshold
// (with at least the minimum volume) it publishes one bounce_rate_warning
// event per crossing; past a pause threshold it pauses the user
// cluster-wide (a paused event), and relay/submit answers the user's MAIL
// with 451 4.7.1 until an operator resumes (jetrelay user resume), which
// also starts a new window.
//
// State lives in the KV bucket jetrelay_guard, one key per user
// (u.<stats.KeyToken(user)>). Every node watches the bucket into memory, so
// the check at MAIL reads no KV. Changes are compare-and-set on the key's
// revision: when two aggregators evaluate a user at once, one write wins
// and only the winner publishes the event; the loser reads the new state
// and finds nothing left to do.
package guard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/stats"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Bucket is the KV bucket of the guard's state.
const Bucket = "jetrelay_guard"

// Rule is one user's thresholds (fractions; 0 = not checked).
type Rule struct {
	Warn, Pause, ComplaintWarn, ComplaintPause float64
	Window                                     time.Duration
	MinVolume                                  int64 // delivered + bounced recipients in the window
}

// State is one user's guard state as stored.
type State struct {
	// WindowStart is when the last resume started a new window: counts
	// before it do not count.
	WindowStart time.Time `json:"window_start,omitzero"`
	Paused      bool      `json:"paused,omitempty"`
	PausedAt    time.Time `json:"paused_at,omitzero"`
	// Reason says why, as MAIL's reply does: "bounce rate 11.2% over 24h".
	Reason string `json:"reason,omitempty"`
	// BounceWarned and ComplaintWarned are set by a warning and cleared
	// when the rate is below the threshold again: one warning per crossing.
	BounceWarned    bool `json:"bounce_warned,omitempty"`
	ComplaintWarned bool `json:"complaint_warned,omitempty"`
}

// Options configure Open.
type Options struct {
	JetStream jetstream.JetStream
	Replicas  int
	Stats     *stats.Store
	Events    *events.Emitter
	Log       zerolog.Logger
	Now       func() time.Time // default time.Now
}

// Guard evaluates users' rates and answers whether a user is paused.
type Guard struct {
	o     Options
	kv    jetstream.KeyValue
	rules atomic.Pointer[map[string]Rule]
	w     jetstream.KeyWatcher

	mu     sync.RWMutex
	states map[string]State // by key token, from the watcher
}

// Open creates or opens the bucket and watches it; it returns once the
// current states are loaded.
func Open(ctx context.Context, o Options) (*Guard, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	kv, err := OpenBucket(ctx, o.JetStream, o.Replicas)
	if err != nil {
		return nil, err
	}
	g := &Guard{o: o, kv: kv, states: map[string]State{}}
	g.rules.Store(&map[string]Rule{})
	g.w, err = kv.WatchAll(context.Background())
	if err != nil {
		return nil, fmt.Errorf("guard: watch %s: %w", Bucket, err)
	}
	loaded := make(chan struct{})
	go g.watch(loaded)
	select {
	case <-loaded:
		return g, nil
	case <-ctx.Done():
		_ = g.w.Stop()
		return nil, ctx.Err()
	}
}

// OpenBucket creates or opens the guard's bucket.
func OpenBucket(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "jetrelay bounce-rate guard: paused users and warning state (relay/guard)",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    max(replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("guard: bucket %s: %w", Bucket, err)
	}
	return kv, nil
}

// watch keeps states current; the watcher resumes by itself after a
// reconnect (an ordered consumer).
func (g *Guard) watch(loaded chan struct{}) {
	var once sync.Once
	for e := range g.w.Updates() {
		if e == nil { // the current values are in
			once.Do(func() { close(loaded) })
			continue
		}
		tok := strings.TrimPrefix(e.Key(), keyPrefix)
		var st State
		if e.Operation() != jetstream.KeyValuePut || json.Unmarshal(e.Value(), &st) != nil {
			st = State{}
		}
		g.mu.Lock()
		if st == (State{}) {
			delete(g.states, tok)
		} else {
			g.states[tok] = st
		}
		g.mu.Unlock()
	}
}

// Close stops the watcher.
func (g *Guard) Close() { _ = g.w.Stop() }

// SetRules replaces the rules by user (start and reload).
func (g *Guard) SetRules(rules map[string]Rule) { g.rules.Store(&rules) }

// Paused says whether user's sending is paused, and why, from memory
// (relay/submit asks at every MAIL).
func (g *Guard) Paused(user string) (reason string, paused bool) {
	g.mu.RLock()
	st, ok := g.states[stats.KeyToken(user)]
	g.mu.RUnlock()
	return st.Reason, ok && st.Paused
}

// state is user's state as last watched.
func (g *Guard) state(user string) State {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.states[stats.KeyToken(user)]
}

const keyPrefix = "u."

func key(user string) string { return keyPrefix + stats.KeyToken(user) }

// read returns user's state and its revision (0: none).
func read(ctx context.Context, kv jetstream.KeyValue, user string) (State, uint64, error) {
	e, err := kv.Get(ctx, key(user))
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return State{}, 0, nil
	}
	if err != nil {
		return State{}, 0, err
	}
	var st State
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return State{}, 0, fmt.Errorf("guard: state of %s: %w", user, err)
	}
	return st, e.Revision(), nil
}

// write stores st at revision rev (0: the key must not exist); false when
// another writer came first.
func write(ctx context.Context, kv jetstream.KeyValue, user string, st State, rev uint64) (bool, error) {
	data, err := json.Marshal(st)
	if err != nil {
		return false, err
	}
	if rev == 0 {
		_, err = kv.Create(ctx, key(user), data)
	} else {
		_, err = kv.Update(ctx, key(user), data, rev)
	}
	if queue.IsConflict(err) {
		return false, nil
	}
	return err == nil, err
}
