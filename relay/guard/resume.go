package guard

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/stats"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrNotPaused: Resume found the user not paused (nothing changed).
var ErrNotPaused = errors.New("guard: the user is not paused")

// Resume lifts user's pause on every node and starts a new window at the
// next full minute (counts before it do not count), then emits a resumed event naming
// actor. A user that is not paused is ErrNotPaused. It uses the bucket as
// it is (an ops command never creates it).
func Resume(ctx context.Context, js jetstream.JetStream, em *events.Emitter, user, actor string) error {
	kv, err := js.KeyValue(ctx, Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return ErrNotPaused
	}
	if err != nil {
		return fmt.Errorf("guard: bucket %s: %w", Bucket, err)
	}
	for range evalAttempts {
		st, rev, err := read(ctx, kv, user)
		if err != nil {
			return err
		}
		if !st.Paused {
			return ErrNotPaused
		}
		was := st.Reason
		// Counts are per minute: the new window starts with the next one,
		// so that none of the bounces that paused the user counts again.
		next := State{WindowStart: time.Now().UTC().Truncate(time.Minute).Add(time.Minute)}
		ok, err := write(ctx, kv, user, next, rev)
		if err != nil {
			return err
		}
		if ok {
			em.Emit(&events.Event{Event: events.Resumed, User: user, Actor: actor,
				Reason: "paused for " + was + "; a new window starts"})
			return nil
		}
	}
	return fmt.Errorf("guard: state of %s kept changing", user)
}

// States reads every user's state (for jetrelay stats); no bucket is none.
func States(ctx context.Context, js jetstream.JetStream) (map[string]State, error) {
	out := map[string]State{}
	kv, err := js.KeyValue(ctx, Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return out, nil
	}
	if err != nil {
		return nil, err
	}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	var users []string
	for k := range lister.Keys() {
		users = append(users, strings.TrimPrefix(k, keyPrefix))
	}
	for _, tok := range users {
		u := stats.TokenUser(tok)
		st, _, err := read(ctx, kv, u)
		if err != nil {
			return nil, err
		}
		out[u] = st
	}
	return out, nil
}
