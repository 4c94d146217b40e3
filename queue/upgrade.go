package queue

// Upgrading from the work-queue stream (before issue 20).
//
// jetrelay used to keep its queue in JETRELAY_QUEUE with work-queue
// retention, where every acknowledgement deletes (and fsyncs) a message.
// nats-server refuses to change a stream's retention, so the queue now
// lives in a stream of its own name (StreamName, limits retention,
// sweep.go) and Open moves an old one's messages there:
//
//  1. Release (before the new stream is created, which needs the jr.*
//     subjects): the legacy stream's delivery consumer is deleted and its
//     subjects changed to legacySubject. Its messages keep their own
//     subjects; a schedule that fires meanwhile stores its target there.
//  2. Move (after setup): every message, in sequence order, is published
//     into the new stream with the same subject, headers and body
//     (importMsg: steering headers dropped, schedules re-armed) and
//     Nats-Msg-Id jrup-<legacy seq>; each window of acknowledged
//     publishes is then purged from the legacy stream. A crash between
//     the two re-publishes that window at the next start: the ids make
//     the copies duplicates within the duplicate window (2 minutes), a
//     later start may deliver that window's entries twice (never lose
//     them).
//  3. The empty legacy stream is deleted.
//
// Every node of a cluster runs it at its start; steps are idempotent and
// the ids make two nodes moving at once harmless: a publish nats-server
// answers "duplicate message id is in process" (the other node's copy is
// being stored) is repeated until stored or a duplicate (publishAll), and
// a node that finds the old stream gone stops — the node that deleted it
// had every message stored first (TestUpgradeClusterFromWorkQueue: three
// nodes starting at once). Nodes of the older
// version must be stopped first (docs/operations.md, "Durability"): they publish into
// and deliver from the legacy stream.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// legacySubject is what the legacy stream listens on while it is moved:
// nothing publishes there.
const legacySubject = "jrlegacy.>"

// releaseLegacy is step 1; it reports whether a legacy stream exists.
func (q *Queue) releaseLegacy(ctx context.Context) (bool, error) {
	old, err := q.js.Stream(ctx, LegacyStreamName)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	cfg := old.CachedInfo().Config
	if slices.Equal(cfg.Subjects, []string{legacySubject}) {
		return true, nil
	}
	q.log.Info().Str("event", "queue_upgrade").Str("stream", LegacyStreamName).Uint64("messages", old.CachedInfo().State.Msgs).
		Msg("moving the work-queue stream into " + StreamName)
	err = old.DeleteConsumer(ctx, ConsumerName)
	if streamGone(err) {
		return false, nil // another node moved it all meanwhile
	}
	if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return false, fmt.Errorf("queue: upgrade: delete the legacy consumer: %w", err)
	}
	cfg.Subjects = []string{legacySubject}
	_, err = q.js.UpdateStream(ctx, cfg)
	if streamGone(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("queue: upgrade: release the legacy stream's subjects: %w", err)
	}
	return true, nil
}

// moveLegacy is steps 2 and 3.
func (q *Queue) moveLegacy(ctx context.Context) error {
	old, err := q.js.Stream(ctx, LegacyStreamName)
	if streamGone(err) {
		return nil // another node moved it all and deleted it
	}
	if err != nil {
		return err
	}
	cfg := q.StreamConfig()
	var window []*nats.Msg
	var last uint64
	moved, winBytes := 0, 0
	flush := func() error {
		if len(window) == 0 {
			return nil
		}
		if err := q.publishAll(ctx, window, nil); err != nil {
			return err
		}
		moved += len(window)
		window, winBytes = window[:0], 0
		return old.Purge(ctx, jetstream.WithPurgeSequence(last+1))
	}
	// done: another node moved the rest and deleted the stream (only once
	// its own publishes of everything were acknowledged); what this node
	// read is published anyway: duplicates within the window.
	done := func() error {
		if err := q.publishAll(ctx, window, nil); err != nil {
			return err
		}
		q.log.Info().Str("event", "queue_upgrade").Int("messages", moved).
			Msg("work-queue stream moved into " + StreamName + " (finished by another node)")
		return nil
	}
	for seq := uint64(1); ; {
		m, err := old.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(">"))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if streamGone(err) {
			return done()
		}
		if err != nil {
			return fmt.Errorf("queue: upgrade: read legacy seq %d: %w", seq, err)
		}
		seq, last = m.Sequence+1, m.Sequence
		for k := range m.Header {
			if directGetHeader(k) {
				delete(m.Header, k)
			}
		}
		msg, ok := importMsg(cfg, exportMsg{Seq: m.Sequence, Time: m.Time, Subject: m.Subject, Header: m.Header,
			Data: m.Data}, time.Now())
		if !ok {
			continue
		}
		msg.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("jrup-%d", m.Sequence))
		msg.Header.Set(jetstream.ExpectedStreamHeader, StreamName)
		window = append(window, msg)
		winBytes += len(msg.Data)
		if len(window) >= importWindowMsgs || winBytes >= importWindowBytes {
			if err := flush(); streamGone(err) {
				return done()
			} else if err != nil {
				return err
			}
		}
	}
	if err := flush(); streamGone(err) {
		return done()
	} else if err != nil {
		return err
	}
	if err := q.js.DeleteStream(ctx, LegacyStreamName); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("queue: upgrade: delete the empty legacy stream: %w", err)
	}
	q.log.Info().Str("event", "queue_upgrade").Int("messages", moved).Msg("work-queue stream moved into " + StreamName)
	return nil
}

// streamGone reports that the legacy stream no longer exists: another
// node of the cluster finished the move (its publishes stored everything
// this node had read; a window this node publishes again is a duplicate).
func streamGone(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, jetstream.ErrStreamNotFound) ||
		(errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamNotFound)
}

// publishAll publishes msgs asynchronously and waits for every ack; an
// error for which ignore (when set) returns true is not one. A message
// whose id another publish is storing at that moment (two nodes moving
// the same window: nats-server answers 409 "duplicate message id is in
// process") is published again until the answer is definite — stored, or
// a duplicate of the stored one — so that no window is purged from its
// source on the strength of another node's publish that may still fail.
func (q *Queue) publishAll(ctx context.Context, msgs []*nats.Msg, ignore func(*nats.Msg, error) bool) error {
	futures := make([]jetstream.PubAckFuture, 0, len(msgs))
	for _, msg := range msgs {
		f, err := q.js.PublishMsgAsync(msg)
		if err != nil {
			return err
		}
		futures = append(futures, f)
	}
	var errs []error
	for _, f := range futures {
		var err error
		select {
		case <-f.Ok():
		case err = <-f.Err():
		case <-ctx.Done():
			return ctx.Err()
		}
		if inProcess(err) {
			err = q.publishSettled(ctx, f.Msg())
		}
		if err != nil && (ignore == nil || !ignore(f.Msg(), err)) {
			errs = append(errs, fmt.Errorf("%s: %w", f.Msg().Subject, err))
		}
	}
	return errors.Join(errs...)
}

// inProcess reports nats-server's answer to a publish whose message id
// another publish is storing at that moment.
func inProcess(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jsErrCodeDuplicateInProcess
}

// jsErrCodeDuplicateInProcess is JSStreamDuplicateMessageConflict (nats.go
// has no name for it).
const jsErrCodeDuplicateInProcess jetstream.ErrorCode = 10158

// publishSettled publishes msg again, pausing between tries, while its id
// is still in process elsewhere.
func (q *Queue) publishSettled(ctx context.Context, msg *nats.Msg) error {
	pause := 50 * time.Millisecond
	for {
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		_, err := q.js.PublishMsg(ctx, msg)
		if !inProcess(err) {
			return err
		}
		pause = min(2*pause, time.Second)
	}
}
