package webhooks

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/nats-io/nats.go/jetstream"
)

// ReplayOptions configure Replay.
type ReplayOptions struct {
	JetStream jetstream.JetStream
	Client    *http.Client // nil = NewClient()
	Hook      Hook
	Since     time.Time
	// Progress, when set, is called after each accepted POST with the
	// events sent so far.
	Progress func(sent int)
}

// Replay sends again every event stored since o.Since that the webhook
// wants, in stream order and batches of Hook.BatchMax, with the event_id
// each had the first time (receivers de-duplicate on it). It reads the
// stream itself (an ordered consumer, no durable state): the webhook's
// own consumer and its pending events are untouched. The first POST that
// fails ends it; it returns how many events were accepted.
func Replay(ctx context.Context, o ReplayOptions) (int, error) {
	if o.Client == nil {
		o.Client = NewClient()
	}
	var batch []Payload
	sent := 0
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := Post(ctx, o.Client, o.Hook, batch); err != nil {
			return err
		}
		sent += len(batch)
		batch = batch[:0]
		if o.Progress != nil {
			o.Progress(sent)
		}
		return nil
	}
	err := events.Tail(ctx, o.JetStream, events.Filter{Since: o.Since}, func(r events.Record) error {
		typ := TypeOf(r.Event)
		if !o.Hook.wants(typ, r.Event.User) {
			return nil
		}
		batch = append(batch, NewPayload(typ, r))
		if len(batch) >= max(o.Hook.BatchMax, 1) {
			return flush()
		}
		return nil
	})
	if err != nil {
		return sent, err
	}
	return sent, flush()
}

// Test posts one signed test event (event "test") to the webhook.
func Test(ctx context.Context, c *http.Client, h Hook) error {
	if c == nil {
		c = NewClient()
	}
	if h.URL == "" {
		return errors.New("webhooks: no URL")
	}
	now := time.Now().UTC()
	p := Payload{Event: TypeTest, EventID: "test-" + EventID(0, now), Time: now.Format(time.RFC3339Nano),
		Reason: "jetrelay webhooks test " + h.Name}
	return Post(ctx, c, h, []Payload{p})
}
