// Package ops owns the operator's actions on queued mail: make deferred
// entries due now (retry), stop and resume their delivery (hold, release)
// and delete them, telling the sender with a DSN. `jetrelay queue` calls it;
// so would any admin endpoint of serve, with the same rules.
//
// Promises:
//   - An action applies to a selection (one message, one recipient domain,
//     or every deferred entry) and runs per entry through queue's
//     storage operations, which name the stored copy they act on: an entry
//     a delivery worker moved meanwhile is skipped and reported, never
//     duplicated or lost; an entry in flight is skipped.
//   - Every entry an action changed is recorded as one event (retried,
//     held, released, deleted) with the operator as actor, through the
//     caller's events.Emitter.
//   - A retry means now: the retried entries are marked so that delivery
//     connects even when their destination was marked down or parked,
//     and every delivery process is told to clear its down marks of the
//     retried domains (queue.MarkRetried); no attempt is counted for it.
//   - A deleted entry's recipients failed for good: unless the request
//     says NoDSN, the sender gets a failure DSN coded 550 5.0.0 (RFC 3463
//     §3.1: other or undefined status), through relay/bounce like any
//     other failure; such a failure never suppresses the recipient.
package ops

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/bounce"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/rs/zerolog"
)

// Action is one operator action.
type Action string

// The actions.
const (
	Retry   Action = "retry"   // make deferred entries due now
	Hold    Action = "hold"    // stop delivery of ready or deferred entries
	Release Action = "release" // resume delivery of held entries (due now)
	Delete  Action = "delete"  // remove entries; the sender gets a DSN
)

// Errors of Do.
var (
	ErrSelection = errors.New("ops: give exactly one of a queue id, a domain or (retry only) all deferred entries")
	ErrNoMatch   = errors.New("no matching entries")
	ErrNoBouncer = errors.New("ops: deleting with a DSN needs a Bouncer (or NoDSN)")
)

// Options configure New.
type Options struct {
	Queue *queue.Queue
	// Events records each change (nil: not recorded).
	Events *events.Emitter
	// Bouncer queues the DSNs of deletes; nil allows only NoDSN deletes.
	Bouncer *bounce.Bouncer
	// Actor names the operator in events, e.g. "cli:alice@host".
	Actor string
	// Now is the operator's clock (default time.Now); the DSN of a delete
	// takes its times from the bouncer's own clock.
	Now func() time.Time
}

// Operator runs operator actions.
type Operator struct {
	o Options
}

// New returns an Operator; Queue is required.
func New(o Options) (*Operator, error) {
	if o.Queue == nil {
		return nil, errors.New("ops: Queue is required")
	}
	if o.Events == nil {
		o.Events = events.NewEmitter(zerolog.Nop(), nil)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Operator{o: o}, nil
}

// Request selects the entries of an action and tunes it.
type Request struct {
	// Exactly one of ID (a message), Domain (every entry for a recipient
	// domain) or AllDeferred (every deferred entry; Retry only).
	ID          string
	Domain      string
	AllDeferred bool
	// NoDSN (Delete only) deletes without telling the sender.
	NoDSN bool
	// Each, if set, is called after each entry with its outcome, its
	// index and the number of entries selected (progress, output).
	Each func(o Outcome, i, n int)
}

// Check reports whether r is a valid request for a.
func (r Request) Check(a Action) error {
	n := 0
	for _, set := range []bool{r.ID != "", r.Domain != "", r.AllDeferred} {
		if set {
			n++
		}
	}
	switch {
	case a != Retry && a != Hold && a != Release && a != Delete:
		return fmt.Errorf("ops: unknown action %q", a)
	case n != 1 || (r.AllDeferred && a != Retry):
		return ErrSelection
	case r.ID != "" && !queue.ValidID(r.ID):
		return fmt.Errorf("ops: %q is not a queue id", r.ID)
	case r.NoDSN && a != Delete:
		return fmt.Errorf("ops: NoDSN applies to delete only")
	}
	return nil
}

// Outcome is what an action did to one entry.
type Outcome struct {
	Item   *queue.Item
	Result queue.Result // Done: the entry changed; Note: e.g. a race warning
	Err    error
}

// Skipped reports an entry the action did not apply to now (already in
// that state, in flight, changed meanwhile): not a failure.
func (o Outcome) Skipped() bool {
	if o.Err == nil {
		return !o.Result.Done
	}
	for _, e := range skips {
		if errors.Is(o.Err, e) {
			return true
		}
	}
	return false
}

// skips are the errors that mean "does not apply to this entry now".
var skips = []error{queue.ErrInFlight, queue.ErrNotDeferred, queue.ErrHeldEntry, queue.ErrNotHeld, queue.ErrChanged}

// Failed reports an entry the action failed on.
func (o Outcome) Failed() bool { return o.Err != nil && !o.Skipped() }

// Report counts the outcomes of an action.
type Report struct {
	Selected, Done, Skipped, Failed int
}

// Do runs action a over the entries r selects, in queue id order, and
// records an event for each entry it changed. It stops early when ctx
// ends. The error is for the request as a whole (invalid, nothing
// selected, the queue unreadable); per-entry failures are in the Report
// and the outcomes passed to r.Each.
func (op *Operator) Do(ctx context.Context, a Action, r Request) (Report, error) {
	if err := r.Check(a); err != nil {
		return Report{}, err
	}
	act, err := op.actFunc(a, r)
	if err != nil {
		return Report{}, err
	}
	sel := queue.ListOptions{ID: r.ID, Domain: r.Domain}
	if r.AllDeferred {
		sel.State = queue.StateDeferred
	}
	items, err := op.o.Queue.List(ctx, sel)
	if err != nil {
		return Report{}, err
	}
	if len(items) == 0 {
		return Report{}, ErrNoMatch
	}
	var markErr error
	if a == Retry {
		markErr = op.markRetried(ctx, r, items)
	}
	rep := Report{Selected: len(items)}
	for i, it := range items {
		if ctx.Err() != nil {
			break
		}
		res, err := act(ctx, it)
		out := Outcome{Item: it, Result: res, Err: err}
		switch {
		case out.Failed():
			rep.Failed++
		case out.Skipped():
			rep.Skipped++
		default:
			rep.Done++
		}
		if res.Done { // also a delete whose DSN failed: the entry is gone
			op.record(a, out)
		}
		if r.Each != nil {
			r.Each(out, i, len(items))
		}
	}
	return rep, errors.Join(ctx.Err(), markErr)
}

// markRetried tells every delivery process that the selected domains (or
// every domain) were retried now, so they clear their down marks of them
// (queue.MarkRetried; relay/deliver's retry.go). The entries retried
// carry the mark themselves, so a failure here only keeps other entries
// of those domains waiting for their destination's breaker.
func (op *Operator) markRetried(ctx context.Context, r Request, items []*queue.Item) error {
	now := time.Now() // not Options.Now: delivery compares it with its own clock
	var domains []string
	switch {
	case r.AllDeferred:
		domains = []string{""}
	case r.Domain != "":
		domains = []string{r.Domain}
	default:
		for _, it := range items {
			if !slices.Contains(domains, it.Env.Domain) {
				domains = append(domains, it.Env.Domain)
			}
		}
	}
	var errs []error
	for _, d := range domains {
		errs = append(errs, op.o.Queue.MarkRetried(ctx, queue.RetryMark{Domain: d, At: now}))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("entries made due, but other delivery processes were not told to clear down marks: %w", err)
	}
	return nil
}

// actFunc returns the storage operation of a.
func (op *Operator) actFunc(a Action, r Request) (func(context.Context, *queue.Item) (queue.Result, error), error) {
	q := op.o.Queue
	switch a {
	case Retry:
		return q.Retry, nil
	case Hold:
		return q.Hold, nil
	case Release:
		return q.Release, nil
	}
	var b queue.Bouncer
	if !r.NoDSN {
		if op.o.Bouncer == nil {
			return nil, ErrNoBouncer
		}
		b = deleteBouncer{op.o.Bouncer}
	}
	return func(ctx context.Context, it *queue.Item) (queue.Result, error) { return q.Delete(ctx, it, b) }, nil
}

// eventKinds are the events of the actions.
var eventKinds = map[Action]string{
	Retry: events.Retried, Hold: events.Held, Release: events.Released, Delete: events.Deleted,
}

// record emits the event of one changed entry.
func (op *Operator) record(a Action, out Outcome) {
	e := out.Item.Env
	op.o.Events.Emit(&events.Event{Event: eventKinds[a], QueueID: e.ID, MsgID: e.MsgID, Domain: e.Domain,
		MailFrom: events.Str(e.From), RcptCount: len(e.Rcpts), Actor: op.o.Actor, Reason: out.Result.Note,
		Meta: e.Meta, Tag: e.Tag})
}

// deleteBouncer implements queue.Bouncer with relay/bounce: the sender
// gets a failure DSN saying an operator removed the message (never a
// remote server's rejection), and nobody is suppressed.
type deleteBouncer struct {
	b *bounce.Bouncer
}

func (d deleteBouncer) Deleted(ctx context.Context, env *queue.Envelope, body []byte) error {
	return d.b.Removed(ctx, env, body)
}
