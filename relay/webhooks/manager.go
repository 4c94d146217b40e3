package webhooks

import (
	"context"
	"net/http"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Hook is one webhook as a sender runs it (config webhooks[] with the
// secret read).
type Hook struct {
	Name      string
	URL       string
	Types     []string // webhook event types; empty = all
	Users     []string // empty = all users
	Secret    []byte
	BatchMax  int
	BatchWait time.Duration
	MaxAge    time.Duration // retry.max_age
	Timeout   time.Duration // one POST
}

// Options configure a Manager.
type Options struct {
	JetStream jetstream.JetStream
	KV        jetstream.KeyValue // from OpenBucket
	Logger    zerolog.Logger
	Metrics   *Metrics // nil = none
	// Node names this process in the status it writes.
	Node string
	// Client posts; nil = a client that follows no redirects and takes
	// proxies from the environment. Each POST is bounded by Hook.Timeout.
	Client *http.Client
	// AckWait is how long a fetched batch stays with its sender without a
	// sign of life before it is redelivered (default 30s); the sender
	// extends it while it retries.
	AckWait time.Duration
	// PinnedTTL is how long a silent sender keeps the pin (default 2 ×
	// AckWait): then another node's sender takes over, after the batch
	// the silent one held was redelivered.
	PinnedTTL time.Duration
	// RetryBase and RetryMax bound the backoff between failed POSTs of a
	// batch (defaults 1s and 5m; it doubles per failure, with jitter).
	RetryBase, RetryMax time.Duration
}

// Manager runs one sender per webhook and applies webhook changes.
type Manager struct {
	o       Options
	mu      sync.Mutex
	senders map[string]*sender
}

// NewManager returns a manager without webhooks; Apply starts them.
func NewManager(o Options) *Manager {
	if o.AckWait <= 0 {
		o.AckWait = 30 * time.Second
	}
	if o.PinnedTTL <= 0 {
		o.PinnedTTL = 2 * o.AckWait
	}
	if o.RetryBase <= 0 {
		o.RetryBase = time.Second
	}
	if o.RetryMax <= 0 {
		o.RetryMax = 5 * time.Minute
	}
	if o.Client == nil {
		o.Client = NewClient()
	}
	m := &Manager{o: o, senders: map[string]*sender{}}
	if o.Metrics != nil {
		o.Metrics.m = m
	}
	return m
}

// NewClient is the webhooks' HTTP client: redirects are not followed (a
// 3xx is a failure, so an endpoint cannot send the relay elsewhere), and
// every POST is bounded by its webhook's timeout.
func NewClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 2
	t.ResponseHeaderTimeout = MaxTimeout
	return &http.Client{
		Transport: t,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// MaxTimeout caps any POST, whatever the webhook's timeout says.
const MaxTimeout = 2 * time.Minute

// Apply makes hooks the running webhooks: new ones start, removed ones
// stop (and their consumer is deleted), changed ones restart on the same
// consumer (its filter follows the new event types). It cannot fail;
// senders retry their own start-up.
func (m *Manager) Apply(hooks []Hook) {
	m.mu.Lock()
	defer m.mu.Unlock()
	want := map[string]Hook{}
	for _, h := range hooks {
		want[h.Name] = h
	}
	for name, s := range m.senders {
		h, keep := want[name]
		if keep && reflect.DeepEqual(h, s.hook) {
			continue
		}
		s.stop()
		delete(m.senders, name)
		if !keep {
			go m.deleteConsumer(name)
		}
	}
	for _, h := range hooks {
		if _, ok := m.senders[h.Name]; !ok {
			m.senders[h.Name] = m.start(h)
		}
	}
}

// deleteConsumer removes a webhook's consumer and status after the
// webhook was removed from the config.
func (m *Manager) deleteConsumer(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := m.o.JetStream.DeleteConsumer(ctx, streamName, consumerName(name))
	if m.o.KV != nil {
		_ = m.o.KV.Delete(ctx, name)
	}
	ev := m.o.Logger.Info()
	if err != nil {
		ev = m.o.Logger.Warn().Err(err)
	}
	ev.Str("event", "webhook_removed").Str("webhook", name).Msg("webhook removed; its consumer is deleted")
}

// Names are the running webhooks, sorted.
func (m *Manager) Names() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.senders))
	for n := range m.senders {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// Close stops every sender: a batch in flight is handed back at once
// (nak) and the pin released, so another node goes on without waiting.
func (m *Manager) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	var wg sync.WaitGroup
	for name, s := range m.senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.stop()
		}()
		delete(m.senders, name)
	}
	wg.Wait()
}

// start runs a sender for h.
func (m *Manager) start(h Hook) *sender {
	ctx, cancel := context.WithCancel(context.Background())
	s := &sender{hook: h, o: m.o, log: m.o.Logger.With().Str("webhook", h.Name).Logger(),
		cancel: cancel, done: make(chan struct{})}
	go s.run(ctx)
	return s
}
