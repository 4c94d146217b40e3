package submit

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Reads that only inform policy (issue 15, point 2).
//
// The suppression lookup at RCPT reads JetStream KV (a direct get, which
// any current replica answers). It decides nothing a later step cannot
// repair: a suppressed recipient that slips through is refused again by
// its MX, and delivery suppresses it again. So when the read fails or is
// slow — a node died, the stream is between leaders, quorum is lost — the
// recipient is accepted (fail open) after at most policyReadTimeout, with
// a warning line (rate-limited) and a counter, instead of turning one
// node's death into 451s on every other node. After a failure the reads
// are skipped for policyReadPause, so that a transaction with many
// recipients waits for one timeout, not one per recipient. The pause is
// this process's view of its own connection, not shared state. Storing
// the message is not such a read: DATA answers 451 4.3.0 when JetStream
// cannot store it.

const (
	// policyReadTimeout bounds one policy read on the command path.
	policyReadTimeout = time.Second
	// policyReadPause is how long reads are skipped after one failed.
	policyReadPause = 5 * time.Second
	// policyReadLogEvery is the least time between two policy_read_failed
	// lines; the failures in between are counted in the next line.
	policyReadLogEvery = 10 * time.Second
	// readSuppression names the suppression lookup in logs and metrics.
	readSuppression = "suppression"
)

// PolicyReadObserver is an optional extension of Observer (relay/admin's
// Metrics implements it): it counts policy reads that failed open.
type PolicyReadObserver interface {
	ObservePolicyReadFailed(read string)
}

// readFailures remembers failed policy reads: when to try again, and when
// a policy_read_failed line was last written. The zero value is ready.
type readFailures struct {
	mu       sync.Mutex
	pauseEnd time.Time
	lastLog  time.Time
	unlogged int
}

// paused reports whether reads are being skipped at now.
func (f *readFailures) paused(now time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return now.Before(f.pauseEnd)
}

// failed records a failure — a failed read, which pauses the reads for
// pause, or one skipped while paused (pause 0) — and reports whether to
// log it now and how many failures went unlogged before it.
func (f *readFailures) failed(now time.Time, pause time.Duration) (logIt bool, unlogged int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if pause > 0 {
		f.pauseEnd = now.Add(pause)
	}
	if !f.lastLog.IsZero() && now.Sub(f.lastLog) < policyReadLogEvery {
		f.unlogged++
		return false, 0
	}
	f.lastLog, unlogged, f.unlogged = now, f.unlogged, 0
	return true, unlogged
}

// suppressed looks rcpt up on the suppression list within
// policyReadTimeout; a failed or skipped lookup lets the recipient through.
func (s *session) suppressed(rcpt string) (since time.Time, ok bool) {
	start := time.Now()
	if s.srv.readFails.paused(start) {
		s.srv.policyReadFailed(s.log, readSuppression, errReadPaused, 0)
		return time.Time{}, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), policyReadTimeout)
	defer cancel()
	since, ok, err := s.srv.suppress.Suppressed(ctx, rcpt)
	if err != nil {
		s.srv.policyReadFailed(s.log, readSuppression, err, time.Since(start))
		return time.Time{}, false
	}
	return since, ok
}

// errReadPaused stands for a read skipped after a recent failure.
var errReadPaused = errors.New("skipped: a policy read failed moments ago")

// policyReadFailed counts a failed (or skipped) policy read and logs it,
// rate-limited; a failed read pauses the reads.
func (s *Server) policyReadFailed(log zerolog.Logger, read string, err error, took time.Duration) {
	if o, ok := s.observe.(PolicyReadObserver); ok {
		o.ObservePolicyReadFailed(read)
	}
	pause := policyReadPause
	if errors.Is(err, errReadPaused) {
		pause = 0
	}
	logIt, unlogged := s.readFails.failed(time.Now(), pause)
	if !logIt {
		return
	}
	log.Warn().Err(err).Str("event", "policy_read_failed").Str("read", read).Int("unlogged_failures", unlogged).
		Int64("duration_ms", took.Milliseconds()).Msg("policy read failed; going on without it (fail open)")
}
