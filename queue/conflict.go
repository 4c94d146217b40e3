package queue

import (
	"errors"

	"github.com/nats-io/nats.go/jetstream"
)

// IsConflict reports a lost compare-and-set race on JetStream: a KV Create
// of a key that exists, an Update at a stale revision, or a publish whose
// expected last sequence (per subject or stream) no longer holds. Every
// package that keeps cluster-wide state in KV (shaping, stats, the bounce
// guard, the auth brake, TLS-RPT counts, the message index) retries on it.
func IsConflict(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}
