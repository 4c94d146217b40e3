package webhooks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/nats-io/nats.go/jetstream"
)

// Bucket holds each webhook's Status under its name, written once per
// batch by whichever node sends it.
const Bucket = "jetrelay_webhooks"

// Status is what `jetrelay webhooks ls` shows of a webhook besides pending.
type Status struct {
	LastSuccess *time.Time `json:"last_success,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
	LastErrorAt *time.Time `json:"last_error_at,omitempty"`
	// Failing counts the failed POSTs of the batch being retried (0 after
	// a success).
	Failing int    `json:"failing,omitempty"`
	Node    string `json:"node,omitempty"` // who wrote this
}

// consumerName is the webhook's durable consumer on the events stream.
func consumerName(hook string) string { return "webhook_" + hook }

// priorityGroup is the consumers' one priority group (pinned_client).
const priorityGroup = "sender"

// OpenBucket creates or opens the status bucket.
func OpenBucket(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, Bucket)
	if err == nil || !errors.Is(err, jetstream.ErrBucketNotFound) {
		return kv, err
	}
	return js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: Bucket, History: 1,
		Replicas: max(replicas, 1), Storage: jetstream.FileStorage,
		Description: "jetrelay: webhook status (last success, last error)"})
}

// ReadStatus reads a webhook's status; a webhook that never sent has none
// (zero Status, no error). A missing bucket is no error either.
func ReadStatus(ctx context.Context, js jetstream.JetStream, hook string) (Status, error) {
	var st Status
	kv, err := js.KeyValue(ctx, Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("webhooks: bucket %s: %w", Bucket, err)
	}
	e, err := kv.Get(ctx, hook)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("webhooks: status of %s: %w", hook, err)
	}
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return st, fmt.Errorf("webhooks: status of %s: %w", hook, err)
	}
	return st, nil
}

// ErrNoConsumer means the webhook's consumer does not exist: no relay has
// run with the webhook configured yet.
var ErrNoConsumer = errors.New("webhooks: no consumer yet (has jetrelay serve run with this webhook?)")

// Pending is how many events the webhook's endpoint has not acknowledged:
// the consumer's pending (matching, not yet fetched) plus ack pending
// (fetched, POST not yet answered 2xx). Events its filter on users or
// types skips are counted until they are fetched and skipped.
func Pending(ctx context.Context, js jetstream.JetStream, hook string) (uint64, error) {
	c, err := js.Consumer(ctx, events.StreamName, consumerName(hook))
	if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, ErrNoConsumer
	}
	if err != nil {
		return 0, fmt.Errorf("webhooks: consumer of %s: %w", hook, err)
	}
	info := c.CachedInfo()
	return info.NumPending + uint64(max(info.NumAckPending, 0)), nil
}
