package queue

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Entry is a leased queue entry handed to a delivery worker. Exactly one of
// Done, Defer or Hold ends the lease; until then InProgress keeps it alive.
type Entry struct {
	Env *Envelope // nil for a wake-up
	// Wake is set (and Env nil) when the message is a parked domain's
	// wake-up (park.go) rather than an entry.
	Wake *Wake
	q    *Queue
	msg  jetstream.Msg
	meta *jetstream.MsgMetadata
	// renewed is when the lease was last known fresh (handed out by Next,
	// or renewed by InProgress), as Unix nanoseconds; see Nak.
	renewed atomic.Int64
}

// Entries is a stream of leased entries from the delivery consumer.
type Entries struct {
	q       *Queue
	it      jetstream.MessagesContext
	ackWait time.Duration
}

// leasePrefetchBytes bounds the bytes of entries pulled ahead of the
// workers (with their inline bodies): 800 entries of 100 KiB would be 80 MB.
const leasePrefetchBytes = 8 << 20

// leaseExpiry is how long one pull request waits on the server; the
// iterator re-pulls (and notices a silent server after two missed idle
// heartbeats, Expiry/2 each) within it.
const leaseExpiry = 5 * time.Second

// ackWait is the delivery consumer's lease time: Options.AckWait or AckWait.
func (q *Queue) ackWait() time.Duration {
	if q.opts.AckWait > 0 {
		return q.opts.AckWait
	}
	return AckWait
}

// Lease starts pulling entries from the shared durable consumer. prefetch
// bounds how many entries this process holds pulled but not yet handed
// out by Next (and leasePrefetchBytes their size): their leases run
// from the moment the server sent them, so keep it to what the caller
// takes within a few seconds.
//
// Entries arrive on a connection of their own: on the publishing
// connection every publish acknowledgement (each submission's 250 waits
// for one) queued behind the bodies the server pushes to the consumer, and
// with 100 KiB bodies at 16 connections that stalled accepts by tens of
// milliseconds.
func (q *Queue) Lease(ctx context.Context, prefetch int) (*Entries, error) {
	js, err := q.leaseJS()
	if err != nil {
		return nil, err
	}
	c, err := js.Consumer(ctx, StreamName, ConsumerName)
	if err != nil {
		return nil, err
	}
	if prefetch < 1 {
		prefetch = 1
	}
	it, err := c.Messages(jetstream.PullMaxMessagesWithBytesLimit(prefetch, leasePrefetchBytes),
		jetstream.PullExpiry(leaseExpiry))
	if err != nil {
		return nil, err
	}
	aw := q.ackWait()
	if info := c.CachedInfo(); info != nil && info.Config.AckWait > 0 {
		aw = min(aw, info.Config.AckWait) // another node may have set a shorter one
	}
	return &Entries{q: q, it: it, ackWait: aw}, nil
}

// AckWait is the consumer's lease time as Lease found it: an entry not
// acknowledged or renewed (Entry.InProgress) within it goes to another
// reader.
func (es *Entries) AckWait() time.Duration { return es.ackWait }

// leaseJS returns JetStream on the lease connection, opening it once.
func (q *Queue) leaseJS() (jetstream.JetStream, error) {
	q.leaseMu.Lock()
	defer q.leaseMu.Unlock()
	if q.leaseNC == nil {
		if q.dial == nil {
			return q.js, nil
		}
		closed := make(chan struct{})
		nc, err := q.dial(" lease", closed)
		if err != nil {
			return nil, fmt.Errorf("queue: lease connection: %w", err)
		}
		q.leaseNC, q.leaseClosed = nc, closed
	}
	return jetstream.New(q.leaseNC)
}

// Next blocks until an entry is leased. A message that is not a valid
// entry is terminated (logged) and skipped. It returns
// jetstream.ErrMsgIteratorClosed after Stop or Drain (wrapping
// nats.ErrConnectionClosed when the connection closed for good);
// jetstream.ErrNoHeartbeat when the server stopped answering (JetStream
// unavailable or the consumer leaderless: the iterator pulls again on the
// next call, so it resumes by itself); or a terminal error such as
// jetstream.ErrConsumerDeleted, after which the iterator is closed and
// only a new Lease reads on.
func (es *Entries) Next() (*Entry, error) {
	for {
		msg, err := es.it.Next()
		if err != nil {
			return nil, err
		}
		e, err := es.q.entryFromMsg(msg)
		if err != nil {
			es.q.log.Error().Err(err).Str("event", "bad_entry").Str("subject", msg.Subject()).
				Msg("unreadable queue entry terminated")
			_ = msg.Term()
			continue
		}
		return e, nil
	}
}

// Stop stops pulling; entries already handed out keep their leases.
func (es *Entries) Stop() { es.it.Stop() }

// Drain stops pulling and lets buffered, not yet handed out entries go back.
func (es *Entries) Drain() { es.it.Drain() }

func (q *Queue) entryFromMsg(msg jetstream.Msg) (*Entry, error) {
	if subj := msg.Subject(); isWakeSubject(subj) {
		meta, err := msg.Metadata()
		if err != nil {
			return nil, err
		}
		w := wakeFromMsg(strings.TrimPrefix(subj, SubjReady+"."+WakeID+"."), msg.Headers())
		e := &Entry{Wake: w, q: q, msg: msg, meta: meta}
		e.renewed.Store(time.Now().UnixNano())
		return e, nil
	}
	env, err := UnmarshalEnvelope([]byte(msg.Headers().Get(HeaderEnv)))
	if err != nil {
		return nil, err
	}
	meta, err := msg.Metadata()
	if err != nil {
		return nil, err
	}
	e := &Entry{Env: env, q: q, msg: msg, meta: meta}
	e.renewed.Store(time.Now().UnixNano())
	return e, nil
}

// Deliveries is how often JetStream handed out this message (1 = first time).
func (e *Entry) Deliveries() uint64 { return e.meta.NumDelivered }

// Seq is the entry's stream sequence.
func (e *Entry) Seq() uint64 { return e.meta.Sequence.Stream }

// Body returns the message bytes (inline, or reassembled from chunks).
func (e *Entry) Body(ctx context.Context) ([]byte, error) {
	if e.Env.Chunks == 0 {
		return e.msg.Data(), nil
	}
	return e.q.body(ctx, e.Env)
}

func (q *Queue) body(ctx context.Context, env *Envelope) ([]byte, error) {
	s, err := q.Stream(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, env.Size)
	for i := 0; i < env.Chunks; i++ {
		m, err := s.GetLastMsgForSubject(ctx, SubjBody+"."+env.ID+"."+strconv.Itoa(i))
		if err != nil {
			return nil, fmt.Errorf("queue: body chunk %d of %s: %w", i, env.ID, err)
		}
		out = append(out, m.Data...)
	}
	if int64(len(out)) != env.Size {
		return nil, fmt.Errorf("queue: body of %s is %d bytes, envelope says %d", env.ID, len(out), env.Size)
	}
	return out, nil
}

// InProgress renews the lease for another AckWait (call well within it).
// It is one small publish, not waited for. The server's cost: on a
// single server it updates the consumer's in-memory state, written out
// at most ten times a second whatever the number of renewals; on a
// replicated consumer it is one Raft proposal, batched with the others
// of the moment into one append (one WAL write per replica), so renew
// only entries held for a while, not every entry on every tick.
func (e *Entry) InProgress() error {
	now := time.Now().UnixNano()
	err := e.msg.InProgress()
	if err == nil {
		e.renewed.Store(now)
	}
	return err
}

// Superseded reports whether a redelivered entry was already moved on by an
// earlier lease holder that crashed after scheduling or holding it but
// before acknowledging: then the entry must just be acknowledged.
func (e *Entry) Superseded(ctx context.Context) bool {
	if e.Deliveries() <= 1 {
		return false
	}
	s, err := e.q.Stream(ctx)
	if err != nil {
		return false
	}
	for _, p := range []string{SubjScheduled, SubjHeld} {
		if _, err := s.GetLastMsgForSubject(ctx, Subject(p, e.Env.ID, e.Env.Domain)); err == nil {
			return true
		}
	}
	m, err := s.GetLastMsgForSubject(ctx, Subject(SubjReady, e.Env.ID, e.Env.Domain))
	if err == nil && m.Sequence > e.Seq() {
		return true
	}
	return false
}

// Done acknowledges the entry for good (delivered, or failed and handed to
// the bounce stage) and reclaims the body once no entry of the message is left.
// The ack is synchronous: when Done returns, the consumer has it, so every
// reader sees the entry as finished or in flight, never ready (the lease
// connection is not the one Info and List use).
func (e *Entry) Done(ctx context.Context) error {
	if e.Wake != nil {
		if err := e.ack(ctx); err != nil {
			return fmt.Errorf("queue: ack wake-up of %s: %w", e.Wake.Domain, err)
		}
		return nil
	}
	if err := e.ack(ctx); err != nil {
		return fmt.Errorf("queue: ack %s/%s: %w", e.Env.ID, e.Env.Domain, err)
	}
	if e.Env.Chunks > 0 {
		return e.q.reclaimBody(ctx, e.Env.ID)
	}
	return nil
}

// reclaimBody purges a message's body chunks when no entry refers to them.
// Acks are synchronous, so of two entries finishing at once at least the
// later one sees no sibling left.
func (q *Queue) reclaimBody(ctx context.Context, id string) error {
	s, err := q.Stream(ctx)
	if err != nil {
		return err
	}
	for _, p := range []string{SubjReady, SubjScheduled, SubjHeld} {
		info, err := s.Info(ctx, jetstream.WithSubjectFilter(p+"."+id+".>"))
		if err != nil {
			return err
		}
		if info.State.Msgs > 0 && len(info.State.Subjects) > 0 {
			return nil
		}
	}
	return s.Purge(ctx, jetstream.WithPurgeSubject(SubjBody+"."+id+".>"))
}

// Defer re-schedules the entry with env (its remaining recipients, attempt
// count, last reply) for time at, then acknowledges the leased copy. The
// schedule is stored before the ack, so a crash in between can only leave a
// redelivery that Superseded recognises.
func (e *Entry) Defer(ctx context.Context, env *Envelope, at time.Time) error {
	env.NextAt = at.UTC()
	env.Probe, env.Retried = false, time.Time{}
	msg, err := e.q.entryMsg(Subject(SubjScheduled, env.ID, env.Domain), env, e.inlineBody())
	if err != nil {
		return err
	}
	msg.Header.Set("Nats-Schedule", "@at "+at.UTC().Format(time.RFC3339))
	msg.Header.Set("Nats-Schedule-Target", Subject(SubjReady, env.ID, env.Domain))
	// Replace any older schedule of this entry (one schedule per subject),
	// which also makes publishing it again harmless.
	msg.Header.Set("Nats-Rollup", "sub")
	if err := persist(ctx, func() error {
		_, err := e.q.js.PublishMsg(ctx, msg, jetstream.WithExpectStream(StreamName))
		return err
	}); err != nil {
		return fmt.Errorf("queue: schedule %s/%s: %w", env.ID, env.Domain, err)
	}
	if err := e.ack(ctx); err != nil {
		return fmt.Errorf("queue: ack deferred %s/%s: %w", env.ID, env.Domain, err)
	}
	return nil
}

// ack acknowledges the lease for good (a double ack: confirmed by the
// server), trying again through passing failures, and hands the stored
// copy to the sweeper (sweep.go). Entries that others look up by
// subject — a chunked body's entries (reclaimBody), wake-ups
// (EnsureWakes) — are deleted by sequence at once instead.
func (e *Entry) ack(ctx context.Context) error {
	err := persist(ctx, func() error {
		err := e.msg.DoubleAck(ctx)
		if errors.Is(err, jetstream.ErrMsgAlreadyAckd) { // an earlier try got through
			return nil
		}
		return err
	})
	if err != nil {
		return err
	}
	if e.Wake != nil || e.Env.Chunks > 0 || e.q.sweeper == nil {
		return e.q.deleteFinished(ctx, e.Seq())
	}
	e.q.sweeper.finished(e.Seq(), e.Env.Size)
	return nil
}

// deleteFinished deletes an acknowledged entry by sequence (gone already
// is fine: swept, or removed by an operator).
func (q *Queue) deleteFinished(ctx context.Context, seq uint64) error {
	s, err := q.Stream(ctx)
	if err != nil {
		return err
	}
	return persist(ctx, func() error { return deleteIfStored(ctx, s, seq) })
}

// persist runs op, which records a lease's outcome in the stream, until it
// succeeds, ctx ends or the failure is final (the connection closed for
// good, or the server refused with an API error), backing off from 50 ms
// to 2 s between tries. A
// lease whose outcome is lost to a passing failure (a reconnect, a leader
// election) comes back after AckWait with every recipient it had, so a
// partly delivered entry would be delivered again to those who have it.
func persist(ctx context.Context, op func() error) error {
	delay := 50 * time.Millisecond
	for {
		err := op()
		var api *jetstream.APIError
		if err == nil || ctx.Err() != nil || errors.Is(err, nats.ErrConnectionClosed) || errors.As(err, &api) {
			return err
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		delay = min(2*delay, 2*time.Second)
	}
}

// Hold moves the entry to the held state (jr.h) until released.
func (e *Entry) Hold(ctx context.Context) error {
	env := *e.Env
	env.Held = true
	msg, err := e.q.entryMsg(Subject(SubjHeld, env.ID, env.Domain), &env, e.inlineBody())
	if err != nil {
		return err
	}
	if _, err := e.q.js.PublishMsg(ctx, msg, jetstream.WithExpectStream(StreamName)); err != nil {
		return err
	}
	return e.ack(ctx)
}

// nakTimeout bounds Nak's store of the fresh copy.
const nakTimeout = 10 * time.Second

// Nak hands the lease back for immediate redelivery (shutdown, a panic).
// Not to be confused with Queue.Release, the operator's "resume a held
// entry". A plain JetStream Nak puts the entry on the consumer's
// redelivery queue, which a sweep's purge empties (sweep.go): the entry
// would then wait for AckWait. So the entry is stored again instead, a
// fresh copy of envelope and body on its subject at the end of the queue,
// and the leased copy is acknowledged; a crash in between leaves both,
// and the older one, delivered again, is Superseded. A wake-up, an entry
// whose copy cannot be stored, and one whose lease may have run out (past
// half of AckWait since it was handed out or renewed: the server may have
// given it to another node, and a copy would make two live entries) get
// the plain Nak, which the server ignores for a lease no longer held.
func (e *Entry) Nak() error {
	if e.Wake != nil || time.Since(time.Unix(0, e.renewed.Load())) > e.q.ackWait()/2 {
		return e.msg.Nak()
	}
	ctx, cancel := context.WithTimeout(context.Background(), nakTimeout)
	defer cancel()
	msg := &nats.Msg{Subject: e.msg.Subject(), Header: nats.Header{}, Data: e.msg.Data()}
	msg.Header.Set(HeaderEnv, e.msg.Headers().Get(HeaderEnv))
	if _, err := e.q.js.PublishMsg(ctx, msg, jetstream.WithExpectStream(StreamName)); err != nil {
		return e.msg.Nak()
	}
	return e.ack(ctx)
}

func (e *Entry) inlineBody() []byte {
	if e.Env.Chunks == 0 {
		return e.msg.Data()
	}
	return nil
}

func (q *Queue) entryMsg(subject string, env *Envelope, body []byte) (*nats.Msg, error) {
	b, err := env.Marshal()
	if err != nil {
		return nil, err
	}
	msg := &nats.Msg{Subject: subject, Header: nats.Header{}, Data: body}
	msg.Header.Set(HeaderEnv, string(b))
	return msg, nil
}

// ParseSubject splits an entry subject into state prefix, queue id and domain.
func ParseSubject(subj string) (prefix, id, domain string, err error) {
	parts := strings.SplitN(subj, ".", 4)
	if len(parts) != 4 || parts[0] != "jr" {
		return "", "", "", errors.New("queue: not an entry subject: " + subj)
	}
	return parts[0] + "." + parts[1], parts[2], parts[3], nil
}
