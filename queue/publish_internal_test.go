package queue

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestRetryable: the publish loop retries transport failures, timeouts and
// the server's "between leaders / busy / still applying" answers, and
// gives up at once on a closed connection, a cancelled caller and answers
// about the message itself.
func TestRetryable(t *testing.T) {
	t.Parallel()
	api := func(code, errCode int) error {
		// As jetstream.PublishMsg returns it, wrapped once more by publishBatch.
		return fmt.Errorf("batch commit: %w", fmt.Errorf("nats: %w",
			&jetstream.APIError{Code: code, ErrorCode: jetstream.ErrorCode(errCode), Description: "x"}))
	}
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"attempt timed out", context.DeadlineExceeded, true},
		{"request timed out", nats.ErrTimeout, true},
		{"no responders", jetstream.ErrNoStreamResponse, true},
		{"not connected", errNotConnected, true},
		{"reconnecting", nats.ErrConnectionReconnecting, true},
		{"JetStream temporarily unavailable", api(503, 10008), true},
		{"stream offline", api(500, 10118), true},
		{"insufficient resources", api(503, 10023), true},
		{"duplicate id in process", api(409, codeDupInProcess), true},
		{"batch incomplete", api(400, codeBatchIncomplete), true},
		{"too many batches in flight", api(429, codeBatchInflight), true},
		{"connection closed", nats.ErrConnectionClosed, false},
		{"caller cancelled", context.Canceled, false},
		{"message too large", nats.ErrMaxPayload, false},
		{"stream name mismatch", api(400, 10060), false},
		{"atomic publish disabled", api(400, 10174), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := retryable(tc.err); got != tc.want {
				t.Errorf("retryable(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

// TestBatchIDs: every attempt gets its own batch id within the server's
// 64-character limit.
func TestBatchIDs(t *testing.T) {
	t.Parallel()
	id := NewID()
	if a, b := batchID(id, 1), batchID(id, 2); a == b || !strings.HasPrefix(a, id) {
		t.Fatalf("batch ids %q, %q for %q", a, b, id)
	}
	long := strings.Repeat("x", 80)
	if a, b := batchID(long, 1), batchID(long, 1); len(a) > maxBatchIDLen || a == b {
		t.Fatalf("batch ids for a long queue id: %q, %q", a, b)
	}
}

// TestPublishAllowance: a second per MiB beyond the first.
func TestPublishAllowance(t *testing.T) {
	t.Parallel()
	for size, want := range map[int]int{0: 0, 1 << 20: 0, 1<<20 + 1: 1, 20 << 20: 19} {
		if got := PublishAllowance(size); got != publishPerMiB*time.Duration(want) {
			t.Errorf("PublishAllowance(%d) = %s, want %d s", size, got, want)
		}
	}
}
