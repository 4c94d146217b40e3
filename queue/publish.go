package queue

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Publishing that survives a leader change (issue 15, point 2).
//
// Every message Enqueue publishes carries a Nats-Msg-Id derived from the
// queue id (its subject, which names the queue id and the domain or chunk
// number), so the stream's duplicate window turns a repeated publish into
// a no-op: a retry after a lost acknowledgement is answered "duplicate",
// never stored twice. An attempt has its own short timeout; a timeout, no
// responders, a lost connection or a server that is between leaders is
// retried, whole, with the same ids, after a short backoff, until the
// publish budget is spent. The answers that mean "already stored" count as
// success:
//   - a single publish: a PubAck with Duplicate set;
//   - an atomic batch: error 10201 "atomic publish batch contains duplicate
//     message id". nats-server (v2.15 jetstream_batching.go,
//     checkMsgHeadersPreClusteredProposal) checks every message of the batch
//     at commit against the ids it has stored and rejects the whole batch
//     when one is known with a stream sequence; our ids are unique within a
//     batch, and a batch is stored all or nothing, so the answer means the
//     message is stored. Error 10158 "duplicate message id is in process"
//     (known, not yet applied) is retried until it becomes one or the other.
//
// A batch gets a fresh Nats-Batch-Id on every attempt: the server keeps a
// half-sent batch under its id until its cleanup timer (10 s) fires, and a
// retry under the same id would collide with that leftover and be refused
// as incomplete. A half-sent batch is never stored: its messages wait in
// the leader's batch store until the commit, and the commit proposes them
// as one multi-entry Raft proposal that followers apply only whole
// (stream.go processJetStreamAtomicBatchMsg, raft.go ProposeMulti). A batch
// staged on a leader that died dies with it.
//
// The stream's duplicate window (DuplicateWindow, 2 min) is far longer
// than the publish budget, so every retry is inside it. A publish can
// still be stored after Enqueue gave up: when its last attempt reached the
// server but the answer did not come in time (a slow leader; a commit
// taken without quorum and applied when quorum returns). Such a message
// was answered 451 and is stored once; the client's retry makes it a
// duplicate delivery, never a loss. Attempts are not sent while the
// connection is down, so none waits in the reconnect buffer to be sent
// long after Enqueue returned.

// PublishOptions bound how long Enqueue tries to get a message stored.
type PublishOptions struct {
	// Attempt bounds one publish attempt (request and acknowledgement);
	// 0 = DefaultPublishAttempt.
	Attempt time.Duration
	// Budget bounds all attempts of one Enqueue, backoff included;
	// 0 = DefaultPublishBudget. The caller's context can only shorten it.
	Budget time.Duration
}

// Publish defaults: a JetStream leader election takes 4-9 s, and a
// submission client must have its reply within 10 s.
const (
	DefaultPublishAttempt = 2500 * time.Millisecond
	DefaultPublishBudget  = 8 * time.Second
	// DuplicateWindow is the queue stream's duplicate window (the server's
	// default, set explicitly): retries of one Enqueue must fall inside it,
	// so a publish budget is capped at half of it.
	DuplicateWindow = 2 * time.Minute
	// publishBackoff is the first pause between attempts; it doubles up
	// to publishBackoffMax.
	publishBackoff    = 50 * time.Millisecond
	publishBackoffMax = 500 * time.Millisecond
	// publishPerMiB is added to an attempt's timeout and to the budget for
	// every MiB of a message beyond the first (PublishAllowance).
	publishPerMiB = time.Second
	// maxBatchIDLen is the server's limit on Nats-Batch-Id.
	maxBatchIDLen = 64
)

// JetStream error codes the publish loop acts on (nats-server
// jetstream_errors_generated.go).
const (
	codeBatchDuplicate  = 10201 // atomic publish batch contains duplicate message id
	codeDupInProcess    = 10158 // duplicate message id is in process
	codeBatchIncomplete = 10176 // atomic publish batch is incomplete
	codeBatchInflight   = 10210 // atomic publish too many inflight
)

// ErrNotStored wraps the last error of an Enqueue that ran out of budget
// (or context) while JetStream was unavailable: the message was not
// acknowledged, and the caller must answer so that the sender retries.
var ErrNotStored = errors.New("queue: message not stored")

// errNotConnected is an attempt skipped because the connection is down:
// sent now, it would wait in the reconnect buffer and could be stored long
// after Enqueue gave up.
var errNotConnected = errors.New("not connected to NATS")

func (o PublishOptions) withDefaults() PublishOptions {
	if o.Attempt <= 0 {
		o.Attempt = DefaultPublishAttempt
	}
	if o.Budget <= 0 {
		o.Budget = DefaultPublishBudget
	}
	return o
}

// PublishAllowance is the time Enqueue adds to an attempt's timeout and to
// its budget for a message of size bytes: a second per MiB beyond the
// first. Storing and replicating a large message takes time on a loaded
// machine, and a retry that sends it all again only adds load. A caller
// bounding Enqueue adds it too.
func PublishAllowance(size int) time.Duration {
	return time.Duration(max(0, size-1)/(1<<20)) * publishPerMiB
}

// publish stores msgs (one message, or an atomic batch) for queue id,
// retrying within the publish budget. It returns nil once JetStream
// acknowledged it or answered that it is already stored.
func (q *Queue) publish(ctx context.Context, id string, msgs []*nats.Msg) error {
	o := q.opts.Publish.withDefaults()
	size := 0
	for _, m := range msgs {
		size += len(m.Data)
	}
	extra := PublishAllowance(size)
	o.Attempt += extra
	ctx, cancel := context.WithTimeout(ctx, min(o.Budget+extra, DuplicateWindow/2))
	defer cancel()
	start := time.Now()
	backoff := publishBackoff
	for attempt := 1; ; attempt++ {
		dup, err := q.publishAttempt(ctx, msgs, batchID(id, attempt), o.Attempt)
		if err == nil {
			if attempt > 1 {
				q.log.Info().Str("event", "enqueue_retried").Str("queue_id", id).Int("attempt", attempt).
					Bool("duplicate", dup).Int64("duration_ms", time.Since(start).Milliseconds()).
					Msg("message stored after retrying the publish")
			}
			return nil
		}
		if !retryable(err) {
			return fmt.Errorf("queue: store %s: %w", id, err)
		}
		q.log.Debug().Err(err).Str("event", "enqueue_attempt_failed").Str("queue_id", id).Int("attempt", attempt).
			Msg("publish attempt failed; retrying")
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w: %s after %d attempts in %s: %w", ErrNotStored, id, attempt,
				time.Since(start).Round(time.Millisecond), err)
		case <-t.C:
		}
		backoff = min(2*backoff, publishBackoffMax)
	}
}

// publishAttempt makes one attempt within its own timeout (a batch under
// batchID); dup reports that the server answered "already stored".
func (q *Queue) publishAttempt(
	ctx context.Context, msgs []*nats.Msg, batchID string, timeout time.Duration,
) (dup bool, err error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	if !q.nc.IsConnected() {
		if q.nc.IsClosed() {
			return false, nats.ErrConnectionClosed
		}
		return false, errNotConnected
	}
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if len(msgs) == 1 {
		ack, err := q.js.PublishMsg(actx, msgs[0], jetstream.WithExpectStream(StreamName))
		if err != nil {
			return false, err
		}
		return ack.Duplicate, nil
	}
	err = q.publishBatch(actx, batchID, msgs)
	var api *jetstream.APIError
	if errors.As(err, &api) && api.ErrorCode == codeBatchDuplicate {
		return true, nil
	}
	return false, err
}

// batchID names one attempt's batch: the queue id and the attempt number,
// or a fresh id where that would exceed the server's limit.
func batchID(id string, attempt int) string {
	b := id + "-" + strconv.Itoa(attempt)
	if len(b) > maxBatchIDLen {
		b = NewID() + "-" + strconv.Itoa(attempt)
	}
	return b
}

// publishBatch publishes msgs as one JetStream atomic batch: the server
// stores all of them or none.
func (q *Queue) publishBatch(ctx context.Context, batchID string, msgs []*nats.Msg) error {
	for i, msg := range msgs {
		msg.Header.Set(hdrBatchID, batchID)
		msg.Header.Set(hdrBatchSeq, strconv.Itoa(i+1))
		if i < len(msgs)-1 {
			if err := q.nc.PublishMsg(msg); err != nil {
				return fmt.Errorf("batch publish: %w", err)
			}
			continue
		}
		msg.Header.Set(hdrBatchCommit, "1")
		if _, err := q.js.PublishMsg(ctx, msg, jetstream.WithExpectStream(StreamName)); err != nil {
			return fmt.Errorf("batch commit: %w", err)
		}
	}
	return nil
}

// retryable reports whether a failed attempt may succeed when repeated:
// transport failures and timeouts, and the server's answers for a stream
// that is between leaders, short of resources or still applying the same
// ids. Other JetStream answers (4xx) are about the message and final.
func retryable(err error) bool {
	if errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrMaxPayload) ||
		errors.Is(err, nats.ErrBadSubject) || errors.Is(err, context.Canceled) {
		return false
	}
	var api *jetstream.APIError
	if !errors.As(err, &api) {
		return true
	}
	switch api.ErrorCode {
	case codeDupInProcess, codeBatchIncomplete, codeBatchInflight:
		return true
	}
	return api.Code >= 500
}
