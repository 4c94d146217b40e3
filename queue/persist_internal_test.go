package queue

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestPersistRetriesPassingFailures(t *testing.T) {
	calls := 0
	err := persist(context.Background(), func() error {
		if calls++; calls < 3 {
			return errors.New("nats: timeout")
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("persist = %v after %d calls, want nil after 3", err, calls)
	}
}

func TestPersistStopsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	fail := errors.New("nats: no responders available for request")
	calls := 0
	err := persist(ctx, func() error { calls++; return fail })
	if !errors.Is(err, fail) {
		t.Fatalf("persist = %v, want the last failure", err)
	}
	if calls < 2 {
		t.Fatalf("%d calls in 300 ms, want retries", calls)
	}
	if ctx.Err() == nil {
		t.Fatal("persist returned before its context ended")
	}
}

func TestPersistGivesUpOnFinalFailures(t *testing.T) {
	for _, final := range []error{
		fmt.Errorf("publish: %w", nats.ErrConnectionClosed),
		&jetstream.APIError{
			Code: 400, ErrorCode: jetstream.JSErrCodeStreamWrongLastSequence, Description: "wrong last sequence",
		},
	} {
		calls := 0
		err := persist(context.Background(), func() error { calls++; return final })
		if calls != 1 || err != final {
			t.Fatalf("%v: %d calls, err %v; want one call and the error", final, calls, err)
		}
	}
}
