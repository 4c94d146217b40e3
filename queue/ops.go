package queue

// Operator view of and actions on queue entries (jetrelay queue).
//
// Reading without a second consumer. Operators read the stream directly:
// per-subject counts from stream info with a subject filter, and messages
// with batched direct gets (no server state).
//
// In-flight. JetStream tracks leases per consumer, not per message, but
// the delivery consumer hands out jr.q messages in stream order, so its
// position decides. A jr.q message at or below the consumer's ack floor is
// finished (acknowledged, waiting for the sweeper's purge, sweep.go): it
// is not shown. One above the floor and at or below the delivered stream
// sequence has been handed to a worker: it is in flight (leased, handed
// back at shutdown and waiting for redelivery, or acknowledged while an
// older entry holds the floor, until the sweeper removes it). A jr.q
// message above the delivered sequence has never been handed out: it is
// ready. So jr.q lists are read from the ack floor on, and jr.q subject
// counts are corrected by a scan up to the delivered sequence.
//
// Safety against the delivery worker. Every action names the stored copy
// it acts on by stream sequence: deletes are by sequence, and publishes
// carry Nats-Expected-Last-Subject-Sequence, so an action on an entry that
// changed meanwhile fails with ErrChanged instead of duplicating or losing
// it. A deferred entry is retried or held atomically by replacing its
// schedule (rollup, expected sequence = the schedule's) with one firing
// now, into jr.q or jr.h. An in-flight entry is refused (ErrInFlight). A
// ready entry is removed by sequence; if the consumer reached that sequence
// in the same instant, a worker may hold a copy: the action still happens
// (never losing mail) and Result.Note says it may be delivered once.

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// State is an entry's state as operators see it.
type State string

// Entry states.
const (
	StateReady    State = "ready"
	StateInFlight State = "in-flight"
	StateDeferred State = "deferred"
	StateHeld     State = "held"
)

// States lists the states in display order.
var States = []State{StateReady, StateInFlight, StateDeferred, StateHeld}

// Operation errors.
var (
	ErrChanged  = errors.New("queue: the entry changed meanwhile (delivered, deferred or moved); look again")
	ErrInFlight = errors.New("queue: the entry is being delivered right now (leased by a worker); " +
		"try again once it is deferred or done")
	ErrNotDeferred = errors.New("queue: the entry is not deferred; nothing to retry")
	ErrHeldEntry   = errors.New("queue: the entry is held; release it instead")
	ErrNotHeld     = errors.New("queue: the entry is not held")
)

// noteRace qualifies an action on a ready entry the consumer reached at the same moment.
const noteRace = "a delivery worker may have leased it at the same moment: it may still be delivered once"

// Item is one stored queue entry.
type Item struct {
	Env     *Envelope   `json:"envelope"`
	State   State       `json:"state"`
	Subject string      `json:"subject"`
	Seq     uint64      `json:"seq"`
	Stored  time.Time   `json:"stored"` // when this copy was stored (entered its state)
	Header  nats.Header `json:"-"`      // the NATS storage headers (envelope, schedule), not the message's
	// Parked: deferred with its failing destination's other entries
	// (park.go); its next attempt is the domain's next probe.
	Parked bool `json:"parked,omitempty"`
	// Waiting: a deferred entry waits for traffic shaping, not for a
	// retry of a failure: why ("shaping: suspended (google)";
	// Envelope.Waiting).
	Waiting string `json:"waiting,omitempty"`
	data    []byte // inline body (or none)
}

// Result says what an action did.
type Result struct {
	Done bool   // the entry was changed
	Note string // e.g. "already held", or a race warning
}

// DomainCount is one destination domain's entries by state.
type DomainCount struct {
	Domain string        `json:"domain"`
	Counts map[State]int `json:"counts"`
}

// StateStat is the size of one state and its oldest entry.
type StateStat struct {
	Count  int       `json:"count"`
	Oldest time.Time `json:"oldest,omitzero"` // arrival of the entry longest in this state
}

// cursor is the delivery consumer's position.
type cursor struct {
	delivered, ackFloor uint64
	pending, ackPending int
}

func (q *Queue) cursor(ctx context.Context) (cursor, error) {
	s, err := q.Stream(ctx)
	if err != nil {
		return cursor{}, err
	}
	c, err := s.Consumer(ctx, ConsumerName)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return cursor{}, nil
	}
	if err != nil {
		return cursor{}, err
	}
	info, err := c.Info(ctx)
	if err != nil {
		return cursor{}, err
	}
	return cursor{delivered: info.Delivered.Stream, ackFloor: info.AckFloor.Stream,
		pending: int(info.NumPending), ackPending: info.NumAckPending}, nil
}

// stateOf classifies a stored entry.
func (c cursor) stateOf(prefix string, seq uint64, env *Envelope) State {
	switch {
	case prefix == SubjHeld || (prefix == SubjScheduled && env.Held):
		return StateHeld
	case prefix == SubjScheduled || prefix == SubjParked:
		return StateDeferred
	case seq <= c.delivered:
		return StateInFlight
	}
	return StateReady
}

// ListOptions select entries; empty fields match all.
type ListOptions struct {
	ID     string
	Domain string
	State  State
}

// List returns the stored entries matching o, by queue id then domain.
func (q *Queue) List(ctx context.Context, o ListOptions) ([]*Item, error) {
	id, dom := "*", ">"
	if o.ID != "" {
		if !ValidID(o.ID) {
			return nil, fmt.Errorf("queue: %q is not a queue id", o.ID)
		}
		id = o.ID
	}
	if o.Domain != "" {
		if !ValidDomain(o.Domain) {
			return nil, fmt.Errorf("%w: %q", ErrInvalidDomain, o.Domain)
		}
		dom = strings.ToLower(o.Domain)
	}
	c, err := q.cursor(ctx)
	if err != nil {
		return nil, err
	}
	var out []*Item
	for _, p := range []string{SubjReady, SubjScheduled, SubjHeld, SubjParked} {
		filter := p + "." + id + "." + dom
		if p == SubjParked { // no queue id in the subject: matched below
			filter = p + ".*." + dom
		}
		from := uint64(1)
		if p == SubjReady {
			from = c.ackFloor + 1 // at or below: finished, not yet swept
		}
		err := q.scan(ctx, filter, from, 0, func(m *nats.Msg) error {
			it, err := itemFrom(m, c)
			if err == nil && (o.State == "" || it.State == o.State) && (o.ID == "" || it.Env.ID == o.ID) {
				out = append(out, it)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Env.ID != out[j].Env.ID {
			return out[i].Env.ID < out[j].Env.ID
		}
		return out[i].Env.Domain < out[j].Env.Domain
	})
	return out, nil
}

// Counts returns entries per destination domain and state, from subject
// counts plus a scan of jr.q up to the delivered sequence (finished
// entries not yet swept, and in-flight ones).
func (q *Queue) Counts(ctx context.Context) ([]DomainCount, error) {
	c, err := q.cursor(ctx)
	if err != nil {
		return nil, err
	}
	by := map[string]map[State]int{}
	add := func(subj string, st State, n int) {
		_, id, d, err := ParseSubject(subj)
		if err != nil || id == WakeID {
			return
		}
		if by[d] == nil {
			by[d] = map[State]int{}
		}
		by[d][st] += n
	}
	subjStates := map[string]State{
		SubjReady: StateReady, SubjScheduled: StateDeferred, SubjHeld: StateHeld, SubjParked: StateDeferred,
	}
	for p, st := range subjStates {
		ps, err := q.streamFor(ctx, p+".>")
		var info *jetstream.StreamInfo
		if err == nil {
			info, err = ps.Info(ctx, jetstream.WithSubjectFilter(p+".>"))
		}
		if p == SubjParked && streamMissing(err) {
			continue // a NATS set up by a jetrelay without a park stream
		}
		if err != nil {
			return nil, err
		}
		for subj, n := range info.State.Subjects {
			add(subj, st, int(n))
		}
	}
	// The jr.q subject counts include finished entries not yet swept (at
	// or below the ack floor: few, a sweep's worth) and in-flight ones
	// (up to the delivered sequence): scan just those two ranges, however
	// long the ready backlog behind them.
	if c.delivered > 0 { // (an upTo of 0 would scan everything)
		err = q.scan(ctx, SubjReady+".>", 1, c.delivered, func(m *nats.Msg) error {
			subj := m.Header.Get(jetstream.SubjectHeader)
			add(subj, StateReady, -1)
			if seq, _ := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64); seq > c.ackFloor {
				add(subj, StateInFlight, 1)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	out := make([]DomainCount, 0, len(by))
	for d, m := range by {
		m[StateReady] = max(m[StateReady], 0) // an entry swept between the two reads
		if m[StateReady] == 0 && len(m) == 1 {
			continue // only finished entries
		}
		out = append(out, DomainCount{Domain: d, Counts: m})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Domain < out[j].Domain })
	return out, nil
}

// Stats samples each state's size and oldest entry cheaply (for metrics):
// consumer info for ready and in-flight counts, and one batched direct get
// per state for the lowest-sequence entry (and, for deferred and held, the
// count). "Oldest" is the arrival of the entry longest in that state.
func (q *Queue) Stats(ctx context.Context) (map[State]StateStat, error) {
	c, err := q.cursor(ctx)
	if err != nil {
		return nil, err
	}
	out := map[State]StateStat{
		StateReady:    {Count: c.pending},
		StateInFlight: {Count: c.ackPending},
	}
	first := func(st State, filter string, from, upTo uint64, count bool) error {
		m, left, err := q.first(ctx, filter, from)
		if err != nil || m == nil {
			return err
		}
		stat := out[st]
		if count {
			stat.Count = int(left) + 1
		}
		if seq, _ := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64); upTo == 0 || seq <= upTo {
			if env, err := UnmarshalEnvelope([]byte(m.Header.Get(HeaderEnv))); err == nil {
				stat.Oldest = env.Arrival
			}
		}
		out[st] = stat
		return nil
	}
	errs := []error{
		first(StateReady, SubjReady+".>", c.delivered+1, 0, false),
		first(StateInFlight, SubjReady+".>", c.ackFloor+1, c.delivered, false),
		first(StateDeferred, SubjScheduled+".>", 1, 0, true),
		first(StateHeld, SubjHeld+".>", 1, 0, true),
	}
	// Parked entries are deferred too.
	sched := out[StateDeferred]
	delete(out, StateDeferred)
	errs = append(errs, first(StateDeferred, SubjParked+".>", 1, 0, true))
	parked := out[StateDeferred]
	if sched.Oldest.IsZero() || (!parked.Oldest.IsZero() && parked.Oldest.Before(sched.Oldest)) {
		sched.Oldest = parked.Oldest
	}
	sched.Count += parked.Count
	out[StateDeferred] = sched
	return out, errors.Join(errs...)
}

// itemFrom builds an Item from a direct-get reply.
func itemFrom(m *nats.Msg, c cursor) (*Item, error) {
	subj := m.Header.Get(jetstream.SubjectHeader)
	prefix, _, _, err := ParseSubject(subj)
	if err != nil {
		return nil, err
	}
	env, err := UnmarshalEnvelope([]byte(m.Header.Get(HeaderEnv)))
	if err != nil {
		return nil, err
	}
	seq, _ := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
	ts, _ := time.Parse(time.RFC3339Nano, m.Header.Get(hdrTimeStamp))
	it := &Item{Env: env, State: c.stateOf(prefix, seq, env), Subject: subj, Seq: seq,
		Stored: ts, Header: m.Header, Parked: prefix == SubjParked, data: m.Data}
	if it.State == StateDeferred {
		it.Waiting = env.Waiting
	}
	return it, nil
}
