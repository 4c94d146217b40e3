package queue

// Operator actions on stored entries: retry, hold, release, delete. Each
// names the stored copy it acts on by stream sequence (see "Safety against
// the delivery worker" in ops.go). relay/ops runs them over a selection of
// entries and records an event for each; this file is the storage side.

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Retry makes a deferred or parked entry due now: its schedule is
// replaced by one firing at once into jr.q (a parked entry is moved
// there). The entry is marked Envelope.Retried (now), so delivery
// attempts it even if its destination was marked down before; the
// attempt count is left as it is.
func (q *Queue) Retry(ctx context.Context, it *Item) (Result, error) {
	prefix, _, _, _ := ParseSubject(it.Subject)
	env := *it.Env
	env.Retried = time.Now().UTC()
	switch {
	case prefix == SubjHeld || (prefix == SubjScheduled && it.Env.Held):
		return Result{}, ErrHeldEntry
	case prefix == SubjParked:
		return q.unparkItem(ctx, it, &env)
	case prefix != SubjScheduled:
		return Result{}, ErrNotDeferred
	}
	return q.rescheduleNow(ctx, it, &env, SubjReady)
}

// Hold stops delivery of an entry until Release: a deferred entry's
// schedule is redirected into jr.h at once; a ready entry is copied to jr.h
// and removed from jr.q by sequence. In-flight entries are refused.
func (q *Queue) Hold(ctx context.Context, it *Item) (Result, error) {
	prefix, _, _, _ := ParseSubject(it.Subject)
	env := *it.Env
	env.Held = true
	switch {
	case prefix == SubjHeld || (prefix == SubjScheduled && it.Env.Held):
		return Result{Note: "already held"}, nil
	case prefix == SubjScheduled:
		return q.rescheduleNow(ctx, it, &env, SubjHeld)
	case prefix == SubjReady:
		c, err := q.cursor(ctx)
		if err != nil {
			return Result{}, err
		}
		if it.Seq <= c.delivered {
			return Result{}, ErrInFlight
		}
	}
	env.Probe, env.NextAt, env.Retried = false, time.Time{}, time.Time{}
	msg, err := q.entryMsg(Subject(SubjHeld, env.ID, env.Domain), &env, it.data)
	if err != nil {
		return Result{}, err
	}
	ack, err := q.publishExpect(ctx, msg, 0)
	if err != nil {
		return Result{}, casErr(err)
	}
	if err := q.deleteSeq(ctx, it.Subject, it.Seq); err != nil {
		// Delivered or deferred meanwhile: undo the held copy.
		if uerr := q.deleteSeq(ctx, msg.Subject, ack.Sequence); uerr != nil && !errors.Is(uerr, ErrChanged) {
			return Result{}, errors.Join(err, uerr)
		}
		return Result{}, err
	}
	if prefix != SubjReady {
		return Result{Done: true}, nil
	}
	return q.afterReadyRemoved(ctx, it.Seq), nil
}

// unparkItem makes a parked entry due now, stored as env (as a probe of
// its domain: if it gets through, the domain's other entries follow).
func (q *Queue) unparkItem(ctx context.Context, it *Item, env *Envelope) (Result, error) {
	m := &nats.Msg{Header: nats.Header{}, Data: it.data}
	for k, v := range it.Header {
		m.Header[k] = v
	}
	b, err := env.Marshal()
	if err != nil {
		return Result{}, err
	}
	m.Header.Set(HeaderEnv, string(b))
	m.Header.Set(jetstream.SequenceHeader, strconv.FormatUint(it.Seq, 10))
	s, err := q.ParkStream(ctx)
	if err != nil {
		return Result{}, err
	}
	if _, err := s.GetMsg(ctx, it.Seq); errors.Is(err, jetstream.ErrMsgNotFound) {
		return Result{}, ErrChanged // unparked by its domain's wake-up meanwhile
	} else if err != nil {
		return Result{}, err
	}
	if err := q.unpark(ctx, m, true); err != nil {
		return Result{}, err
	}
	return Result{Done: true}, nil
}

// Release resumes delivery of a held entry (due now).
func (q *Queue) Release(ctx context.Context, it *Item) (Result, error) {
	prefix, _, _, _ := ParseSubject(it.Subject)
	env := *it.Env
	env.Held, env.NextAt = false, time.Time{}
	switch {
	case prefix == SubjScheduled && it.Env.Held:
		return q.rescheduleNow(ctx, it, &env, SubjReady)
	case prefix != SubjHeld:
		return Result{}, ErrNotHeld
	}
	msg, err := q.entryMsg(Subject(SubjReady, env.ID, env.Domain), &env, it.data)
	if err != nil {
		return Result{}, err
	}
	// Expect no unfinished ready copy, then drop the held one: a crash in
	// between leaves the held copy behind (never a lost entry).
	last, err := q.finishedLast(ctx, msg.Subject)
	if err != nil {
		return Result{}, err
	}
	if _, err := q.publishExpect(ctx, msg, last); err != nil {
		return Result{}, casErr(err)
	}
	if err := q.deleteSeq(ctx, it.Subject, it.Seq); err != nil {
		return Result{Done: true, Note: "the held copy was already gone (another operator?)"}, nil
	}
	return Result{Done: true}, nil
}

// Bouncer tells the sender about the recipients of an entry an operator
// deleted. relay/ops implements it with relay/bounce, so queue imports
// neither.
type Bouncer interface {
	// Deleted queues a failure DSN for env's recipients; body is the
	// message. It is called after the entry is removed, and again after a
	// passing failure, so it must be idempotent; an error means no DSN
	// was queued.
	Deleted(ctx context.Context, env *Envelope, body []byte) error
}

// Delete removes an entry (not in flight) by sequence, tells bouncer (if
// not nil), and reclaims the body once no entry of the message is left.
func (q *Queue) Delete(ctx context.Context, it *Item, bouncer Bouncer) (Result, error) {
	prefix, _, _, _ := ParseSubject(it.Subject)
	if prefix == SubjReady {
		c, err := q.cursor(ctx)
		if err != nil {
			return Result{}, err
		}
		if it.Seq <= c.delivered {
			return Result{}, ErrInFlight
		}
	}
	var body []byte
	if bouncer != nil {
		var err error
		if body, err = q.itemBody(ctx, it); err != nil {
			return Result{}, err
		}
	}
	if err := q.deleteSeq(ctx, it.Subject, it.Seq); err != nil {
		return Result{}, err
	}
	res := Result{Done: true}
	if prefix == SubjReady {
		res = q.afterReadyRemoved(ctx, it.Seq)
	}
	var errs []error
	if bouncer != nil {
		// The entry is gone: its DSN is tried through passing failures
		// (Deleted is idempotent), so the sender is not left untold.
		if err := persist(ctx, func() error { return bouncer.Deleted(ctx, it.Env, body) }); err != nil {
			errs = append(errs, fmt.Errorf("entry deleted, but no DSN was queued: %w", err))
		}
	}
	if it.Env.Chunks > 0 {
		errs = append(errs, q.reclaimBody(ctx, it.Env.ID))
	}
	return res, errors.Join(errs...)
}

// afterReadyRemoved checks whether the consumer reached a removed ready
// entry's sequence meanwhile: then a worker may hold a copy.
func (q *Queue) afterReadyRemoved(ctx context.Context, seq uint64) Result {
	if c, err := q.cursor(ctx); err != nil || c.delivered >= seq {
		return Result{Done: true, Note: noteRace}
	}
	return Result{Done: true}
}

// rescheduleNow replaces a schedule (only if it is still it.Seq) with one
// firing now into target's subject.
func (q *Queue) rescheduleNow(ctx context.Context, it *Item, env *Envelope, target string) (Result, error) {
	now := time.Now().UTC()
	if target == SubjReady {
		env.NextAt = now
	}
	msg, err := q.entryMsg(it.Subject, env, it.data)
	if err != nil {
		return Result{}, err
	}
	msg.Header.Set("Nats-Schedule", "@at "+now.Format(time.RFC3339))
	msg.Header.Set("Nats-Schedule-Target", Subject(target, env.ID, env.Domain))
	msg.Header.Set("Nats-Rollup", "sub")
	if _, err := q.publishExpect(ctx, msg, it.Seq); err != nil {
		return Result{}, casErr(err)
	}
	return Result{Done: true}, nil
}

// itemBody returns the message bytes of a stored entry.
func (q *Queue) itemBody(ctx context.Context, it *Item) ([]byte, error) {
	if it.Env.Chunks == 0 {
		return it.data, nil
	}
	return q.body(ctx, it.Env)
}

// deleteSeq removes one stored message (of subject's stream); ErrChanged
// when it is gone already.
func (q *Queue) deleteSeq(ctx context.Context, subject string, seq uint64) error {
	s, err := q.streamFor(ctx, subject)
	if err != nil {
		return err
	}
	derr := s.DeleteMsg(ctx, seq)
	if derr == nil {
		return nil
	}
	if _, err := s.GetMsg(ctx, seq); errors.Is(err, jetstream.ErrMsgNotFound) {
		return ErrChanged
	}
	return derr
}

// finishedLast returns the sequence of the last jr.q message on subject
// when it is finished (at or below the delivery consumer's ack floor, not
// yet swept: sweep.go), 0 when there is none, and ErrChanged when it is
// not finished (ready or in flight): the expectation for a publish that
// must not make a second live copy.
func (q *Queue) finishedLast(ctx context.Context, subject string) (uint64, error) {
	s, err := q.Stream(ctx)
	if err != nil {
		return 0, err
	}
	m, err := s.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	c, err := q.cursor(ctx)
	if err != nil {
		return 0, err
	}
	if m.Sequence > c.ackFloor {
		return 0, ErrChanged
	}
	return m.Sequence, nil
}

// publishExpect publishes msg to the queue stream only if the last message
// on its subject has sequence last (0: there is none); see casErr.
func (q *Queue) publishExpect(ctx context.Context, msg *nats.Msg, last uint64) (*jetstream.PubAck, error) {
	return q.js.PublishMsg(ctx, msg,
		jetstream.WithExpectStream(StreamName), jetstream.WithExpectLastSequencePerSubject(last))
}

// casErr maps a failed expected-sequence check to ErrChanged.
func casErr(err error) error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
		return ErrChanged
	}
	return err
}
