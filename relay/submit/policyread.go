package submit

import (
	"context"
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
// node's death into 451s on every other node. Storing the message is not
// such a read: DATA answers 451 4.3.0 when JetStream cannot store it.

const (
	// policyReadTimeout bounds one policy read on the command path.
	policyReadTimeout = time.Second
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

// readFailureLog rate-limits the policy_read_failed lines; the zero value
// is ready.
type readFailureLog struct {
	mu      sync.Mutex
	last    time.Time
	skipped int
}

// note reports whether to log a failure now and how many failures went
// unlogged before it.
func (l *readFailureLog) note(now time.Time) (logIt bool, skipped int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() && now.Sub(l.last) < policyReadLogEvery {
		l.skipped++
		return false, 0
	}
	l.last, skipped, l.skipped = now, l.skipped, 0
	return true, skipped
}

// suppressed looks rcpt up on the suppression list within
// policyReadTimeout; a failed lookup lets the recipient through.
func (s *session) suppressed(rcpt string) (since time.Time, ok bool) {
	ctx, cancel := context.WithTimeout(context.Background(), policyReadTimeout)
	defer cancel()
	start := time.Now()
	since, ok, err := s.srv.suppress.Suppressed(ctx, rcpt)
	if err != nil {
		s.srv.policyReadFailed(s.log, readSuppression, err, time.Since(start))
		return time.Time{}, false
	}
	return since, ok
}

// policyReadFailed counts a failed policy read and logs it (rate-limited).
func (s *Server) policyReadFailed(log zerolog.Logger, read string, err error, took time.Duration) {
	if o, ok := s.observe.(PolicyReadObserver); ok {
		o.ObservePolicyReadFailed(read)
	}
	logIt, skipped := s.readFails.note(time.Now())
	if !logIt {
		return
	}
	log.Warn().Err(err).Str("event", "policy_read_failed").Str("read", read).Int("unlogged_failures", skipped).
		Int64("duration_ms", took.Milliseconds()).Msg("policy read failed; going on without it (fail open)")
}
