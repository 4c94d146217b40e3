package queue

// Sweeping finished entries (limits retention, issue 20).
//
// The queue stream keeps its messages until they are removed (limits
// retention): acknowledging an entry only moves the delivery consumer's
// state, which costs no fsync of its own (the server writes consumer
// state at most ten times a second; with replicas it is one Raft append
// shared by every proposal of the moment). On a work-queue stream each
// acknowledgement was a delete, and each delete a tombstone written and
// fsynced on its own: half of the fsyncs per message.
//
// Finished entries are removed instead by the sweeper that Open starts
// on every node: sweepInterval after this node finished an entry, sooner
// after sweepBytes or sweepCount (or every sweepIdle anyway), it
// reads the consumer's ack floor (every jr.q entry at or below it is
// acknowledged, cluster-wide, because the floor is replicated consumer
// state) and purges jr.q.> below it: one request, one fsync, whatever it
// removes. jr.s, jr.h and jr.b are left alone (the purge takes a subject
// filter).
//
// Why not after every entry: nats-server (v2.15.2, consumer.purge)
// empties the consumer's redelivery queue of everything already
// delivered on any purge that touches its subjects, also what the purge
// did not remove. An entry handed back (Nak) or whose lease expired, and
// not yet sent again when a purge lands, is then sent again only after
// AckWait. Entries wait in that queue for milliseconds while a worker
// has a pull outstanding, so a few purges a second make that rare; the stopping
// node's own sweep at Close deletes by sequence and never purges (its
// hand-back Naks are in that queue right then).
//
// An entry acknowledged above the floor (an older one is still leased: a
// slow delivery holds the floor) stays until the floor passes it. So that
// one stuck lease cannot keep a whole busy hour on disk, the node that
// acknowledged it deletes it by sequence once it is finishedGrace old,
// and at Close deletes every one it still knows of. Until then it shows
// as in flight to operators (ops.go), never as ready.
//
// Entries that other readers look up by subject are deleted at once,
// after their acknowledgement: entries with chunked bodies (reclaimBody
// asks whether any sibling entry is left) and parked domains' wake-ups
// (EnsureWakes asks whether one is pending).
//
// Crash windows. A kill -9 loses the consumer state written in the last
// ~100 ms: entries acknowledged then and not yet purged are delivered
// again (a duplicate, never a loss; at-least-once). A purge is a stream
// operation, stored before it is answered.

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

const (
	// sweepInterval is the longest a finished entry waits for a sweep.
	sweepInterval = 5 * time.Second
	// sweepBytes and sweepCount: this much finished since the last sweep
	// sweeps sooner (the blocks to purge are then still in the server's
	// cache: a purge reads every block it removes messages from).
	sweepBytes = 16 << 20
	sweepCount = 2048
	// sweepMinGap is the shortest time between two sweeps of a node.
	sweepMinGap = 100 * time.Millisecond
	// sweepIdle: a node that finished nothing sweeps this often anyway
	// (another node's acknowledgements may have moved the floor).
	sweepIdle = 30 * time.Second
	// finishedGrace is how long an entry acknowledged above the ack
	// floor waits for the floor before it is deleted on its own.
	finishedGrace = 10 * time.Second
	// maxFinished bounds the acknowledged-above-the-floor entries a node
	// remembers; past it the oldest are deleted at once.
	maxFinished = 100_000
)

// finishedEntry is an entry this node acknowledged, not yet swept.
type finishedEntry struct {
	seq uint64
	at  time.Time
}

// sweeper removes finished entries (see above).
type sweeper struct {
	q     *Queue
	grace time.Duration
	mu    sync.Mutex
	done  []finishedEntry // in acknowledgement order
	// since the last sweep: entries and bytes finished
	pendN, pendBytes int64
	full             chan struct{} // sweepBytes or sweepCount reached
	sweepM           sync.Mutex    // one sweep at a time (floor)
	kick             chan struct{} // a finish since the last sweep
	floor            uint64        // the ack floor purged below, last sweep
	stop             chan struct{}
	exited           chan struct{}
	closed           sync.Once
}

func newSweeper(q *Queue) *sweeper {
	grace := q.opts.FinishedGrace
	if grace <= 0 {
		grace = finishedGrace
	}
	return &sweeper{q: q, grace: grace, kick: make(chan struct{}, 1), full: make(chan struct{}, 1),
		stop: make(chan struct{}), exited: make(chan struct{})}
}

// finished records seq (size bytes), acknowledged by this node.
func (s *sweeper) finished(seq uint64, size int64) {
	s.mu.Lock()
	s.done = append(s.done, finishedEntry{seq: seq, at: time.Now()})
	s.pendN++
	s.pendBytes += size
	full := s.pendN >= sweepCount || s.pendBytes >= sweepBytes
	s.mu.Unlock()
	signal(s.kick)
	if full {
		signal(s.full)
	}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// run sweeps sweepInterval after the first entry finished since the last
// sweep, sooner when sweepBytes or sweepCount have finished, and every
// sweepIdle anyway; sweeps are at least sweepMinGap apart.
func (s *sweeper) run() {
	defer close(s.exited)
	idle := time.NewTimer(sweepIdle)
	defer idle.Stop()
	var due <-chan time.Time
	for {
		select {
		case <-s.stop:
			return
		case <-s.kick:
			if due == nil {
				due = time.After(sweepInterval)
			}
			continue
		case <-s.full:
		case <-due:
		case <-idle.C:
		}
		due = nil
		s.mu.Lock()
		s.pendN, s.pendBytes = 0, 0
		s.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := s.sweep(ctx, s.grace, true); err != nil && !errors.Is(err, context.Canceled) {
			s.q.log.Debug().Err(err).Str("event", "queue_sweep_failed").Msg("sweep of finished entries failed; trying again")
		}
		cancel()
		idle.Reset(sweepIdle)
		select {
		case <-s.stop:
			return
		case <-time.After(sweepMinGap):
		}
	}
}

// close stops the loop and deletes, by sequence, every entry this node
// finished above the floor (no purge: see above).
func (s *sweeper) close(ctx context.Context) {
	first := false
	s.closed.Do(func() { first = true; close(s.stop) })
	<-s.exited
	if !first || !s.q.nc.IsConnected() {
		return
	}
	if err := s.sweep(ctx, 0, false); err != nil {
		s.q.log.Warn().Err(err).Str("event", "queue_sweep_failed").
			Msg("finished entries left in the queue stream at close; the next sweep removes them")
	}
}

// sweep purges jr.q below the ack floor (when purge is set), then
// deletes this node's finished entries above it that are older than grace.
func (s *sweeper) sweep(ctx context.Context, grace time.Duration, purge bool) error {
	s.sweepM.Lock()
	defer s.sweepM.Unlock()
	st, err := s.q.Stream(ctx)
	if err != nil {
		return err
	}
	c, err := s.q.cursor(ctx)
	if err != nil {
		return err
	}
	if purge && c.ackFloor > s.floor {
		// One request: everything on jr.q.> at or below the floor.
		err := st.Purge(ctx, jetstream.WithPurgeSubject(SubjReady+".>"), jetstream.WithPurgeSequence(c.ackFloor+1))
		if err != nil {
			return err
		}
		s.floor = c.ackFloor
	}
	for _, seq := range s.expired(c.ackFloor, grace) {
		if err := deleteIfStored(ctx, st, seq); err != nil {
			return err
		}
	}
	return nil
}

// expired drops the finished entries at or below floor and returns (and
// drops) those older than grace, or beyond maxFinished.
func (s *sweeper) expired(floor uint64, grace time.Duration) []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.done = slices.DeleteFunc(s.done, func(f finishedEntry) bool { return f.seq <= floor })
	cut := time.Now().Add(-grace)
	n := 0
	for n < len(s.done) && (!s.done[n].at.After(cut) || len(s.done)-n > maxFinished) {
		n++
	}
	out := make([]uint64, n)
	for i, f := range s.done[:n] {
		out[i] = f.seq
	}
	s.done = slices.Delete(s.done, 0, n)
	return out
}

// deleteIfStored deletes seq from st; a message not stored any more
// (swept, or removed by an operator) is no error. nats.go reports a
// refused delete as text, so a failure is checked by reading seq back.
func deleteIfStored(ctx context.Context, st jetstream.Stream, seq uint64) error {
	err := st.DeleteMsg(ctx, seq)
	if err == nil || errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil
	}
	if _, gerr := st.GetMsg(ctx, seq); errors.Is(gerr, jetstream.ErrMsgNotFound) {
		return nil
	}
	return err
}

// Sweep removes finished entries now: jr.q below the delivery consumer's
// ack floor, and every entry this process acknowledged above it. Tests
// and tools call it before they count what is stored.
func (q *Queue) Sweep(ctx context.Context) error {
	if q.sweeper == nil {
		return nil
	}
	return q.sweeper.sweep(ctx, 0, true)
}
