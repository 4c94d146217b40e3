package shaping

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Bucket is the JetStream KV bucket of shaping state.
const Bucket = "jetrelay_shaping"

const (
	paceBurst = 2
	blockSpan = 500 * time.Millisecond
)

func blockTokens(r Rate) int {
	return max(1, min(64, int(blockSpan/r.Interval())))
}

// Shaper enforces Settings.
type Shaper struct {
	changed chan struct{}
}

// Open creates the bucket and starts the shaper.
func Open(ctx context.Context, o Options, s Settings) (*Shaper, error) {
	return &Shaper{changed: make(chan struct{})}, nil
}

// Apply swaps in new settings.
func (s *Shaper) Apply(set Settings) {}

// Close stops the shaper.
func (s *Shaper) Close() {}

// Classify returns the class of destination.
func (s *Shaper) Classify(destination string, mxHosts []string) Class {
	return Class{Key: "dest:" + destination}
}

// Changed returns a channel closed when the class's limits change.
func (s *Shaper) Changed(c Class) <-chan struct{} { return s.changed }

// SetWaiting reports how many entries of c wait on this node.
func (s *Shaper) SetWaiting(c Class, n int) {}

// Observe feeds a reply to the rules.
func (s *Shaper) Observe(c Class, r Reply) {}

// Conn is one connection's slot.
type Conn struct{}

// Connect takes a connection slot.
func (s *Shaper) Connect(ctx context.Context, c Class, source string) (*Conn, Wait, bool) {
	return &Conn{}, Wait{}, true
}

// Send takes one message token.
func (c *Conn) Send(ctx context.Context) (Wait, bool) { return Wait{}, true }

// Release frees the slot.
func (c *Conn) Release() {}

// ProviderStatus is one provider's state.
type ProviderStatus struct {
	Name           string     `json:"name"`
	Connections    int        `json:"connections"`
	Limit          Limits     `json:"limit"`
	Effective      Rate       `json:"effective_rate"`
	Rate           float64    `json:"rate"`
	SuspendedUntil *time.Time `json:"suspended_until"`
	Reason         string     `json:"reason"`
	Waiting        int        `json:"waiting"`
}

// Status reads every provider's state.
func Status(ctx context.Context, js jetstream.JetStream, set Settings) ([]ProviderStatus, error) {
	return nil, nil
}

// Resume lifts a suspension.
func Resume(ctx context.Context, js jetstream.JetStream, provider string) error { return nil }
