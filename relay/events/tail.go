package events

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Filter selects events for Tail. Empty fields match everything.
type Filter struct {
	// ID selects one message's history (server-side: the subjects of its
	// shard, jr.ev.*.<Shard(ID)>, and the older form jr.ev.*.<ID>).
	ID string
	// From selects messages by envelope sender: an event carrying a
	// matching mail_from (accepted) selects its queue id, and every later
	// event of that queue id matches too.
	From string
	// Rcpt and Domain match the event's recipient and domain (case-insensitive;
	// Domain also matches the recipient's domain).
	Rcpt   string
	Domain string
	// Status matches the event's status or its kind (delivered, deferred,
	// failed, accepted, rejected, dsn, ...).
	Status string
	// Meta selects messages by their metadata (X-Jetrelay-Meta-<key>):
	// an event whose Meta holds every pair (keys lower-case, values
	// exact) matches and selects its queue id, and every later event of
	// that queue id matches too (those without Meta, such as a bounce
	// received at the intake, included).
	Meta map[string]string
	// Since starts at the first event stored at or after this time
	// (DeliverByStartTime); zero starts at the oldest event kept.
	Since time.Time
	// Follow keeps waiting for new events until ctx ends; otherwise Tail
	// returns once it has read every event stored when it started.
	Follow bool
	// FromNow starts after the last event stored when Tail started
	// (DeliverNewPolicy): `logs -f` shows what happens from now on.
	// Since, when set, wins.
	FromNow bool
}

// Record is one event read back from the stream.
type Record struct {
	Seq   uint64    // stream sequence
	Time  time.Time // when the stream stored it
	Event *Event
	Raw   []byte // the JSON as stored
}

// ErrNoStream means the events stream does not exist (yet).
var ErrNoStream = errors.New("events: no " + StreamName + " stream on this NATS (has jetrelay serve run against it?)")

// fetchBatch is how many events one catch-up fetch asks for.
const fetchBatch = 500

// Tail reads events in stream order through an ordered consumer (no
// durable state on the server) and calls fn for each one matching f. It
// returns fn's first error, ctx's error when following, or nil when a
// non-following read has caught up.
func Tail(ctx context.Context, js jetstream.JetStream, f Filter, fn func(Record) error) error {
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{SubjPrefix + ".>"},
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		InactiveThreshold: time.Minute,
	}
	if f.ID != "" {
		cfg.FilterSubjects = []string{SubjPrefix + ".*." + Shard(f.ID)}
		if legacy := token(f.ID); legacy != Shard(f.ID) {
			cfg.FilterSubjects = append(cfg.FilterSubjects, SubjPrefix+".*."+legacy)
		}
	}
	if f.FromNow {
		cfg.DeliverPolicy = jetstream.DeliverNewPolicy
	}
	if !f.Since.IsZero() {
		since := f.Since
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	cons, err := js.OrderedConsumer(ctx, StreamName, cfg)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return ErrNoStream
	}
	if err != nil {
		return fmt.Errorf("events: %w", err)
	}
	m := &matcher{f: f, ids: map[string]bool{}, metaIDs: map[string]bool{}}
	handle := func(msg jetstream.Msg) (uint64, error) {
		meta, err := msg.Metadata()
		if err != nil {
			return 0, nil
		}
		var ev Event
		if Decode(msg.Data(), &ev, AllFields) != nil || !m.match(&ev) {
			return meta.NumPending, nil
		}
		rec := Record{Seq: meta.Sequence.Stream, Time: meta.Timestamp, Event: &ev, Raw: msg.Data()}
		return meta.NumPending, fn(rec)
	}
	if f.Follow {
		return follow(ctx, cons, handle)
	}
	return catchUp(ctx, cons, handle)
}

// catchUp fetches without waiting until nothing is pending.
func catchUp(ctx context.Context, cons jetstream.Consumer, handle func(jetstream.Msg) (uint64, error)) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		batch, err := cons.FetchNoWait(fetchBatch)
		if err != nil {
			return fmt.Errorf("events: fetch: %w", err)
		}
		n, pending := 0, uint64(0)
		for msg := range batch.Messages() {
			n++
			if pending, err = handle(msg); err != nil {
				return err
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return fmt.Errorf("events: fetch: %w", err)
		}
		if n == 0 || pending == 0 {
			return nil
		}
	}
}

// follow streams events until ctx ends.
func follow(ctx context.Context, cons jetstream.Consumer, handle func(jetstream.Msg) (uint64, error)) error {
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("events: %w", err)
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	defer it.Stop()
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("events: %w", err)
		}
		if _, err := handle(msg); err != nil {
			return err
		}
	}
}

// matcher applies a Filter's client-side fields.
type matcher struct {
	f       Filter
	ids     map[string]bool // queue ids selected by From
	metaIDs map[string]bool // queue ids selected by Meta
}

// maxFromIDs bounds the queue ids remembered for a From filter.
const maxFromIDs = 100000

func (m *matcher) match(e *Event) bool {
	f := m.f
	if f.ID != "" && e.QueueID != f.ID {
		return false
	}
	if f.From != "" {
		own := e.MailFrom != nil && strings.EqualFold(*e.MailFrom, f.From)
		if own && e.QueueID != "" && len(m.ids) < maxFromIDs {
			m.ids[e.QueueID] = true
		}
		if !own && !m.ids[e.QueueID] {
			return false
		}
	}
	if len(f.Meta) > 0 && !m.matchMeta(e) {
		return false
	}
	if f.Rcpt != "" && !strings.EqualFold(e.Rcpt, f.Rcpt) {
		return false
	}
	if f.Domain != "" && !strings.EqualFold(e.Domain, f.Domain) && !strings.EqualFold(rcptDomain(e.Rcpt), f.Domain) {
		return false
	}
	if f.Status != "" && !strings.EqualFold(e.Status, f.Status) && !strings.EqualFold(e.Event, f.Status) {
		return false
	}
	return true
}

// matchMeta applies Filter.Meta (see there).
func (m *matcher) matchMeta(e *Event) bool {
	own := true
	for k, v := range m.f.Meta {
		if got, ok := e.Meta[k]; !ok || got != v {
			own = false
			break
		}
	}
	if own && e.QueueID != "" && len(m.metaIDs) < maxFromIDs {
		m.metaIDs[e.QueueID] = true
	}
	return own || (e.QueueID != "" && m.metaIDs[e.QueueID])
}

func rcptDomain(addr string) string {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		return addr[i+1:]
	}
	return ""
}
