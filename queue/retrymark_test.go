package queue_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/queue/queuetest"
)

// An operator retry written with MarkRetried reaches a watcher (every
// delivery process has one): a domain's as that domain, --all as "".
func TestRetryMarksReachWatchers(t *testing.T) {
	t.Parallel()
	q := queuetest.RunJetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	marks, err := q.WatchRetried(ctx)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Now().Truncate(time.Millisecond)
	if err := q.MarkRetried(ctx, queue.RetryMark{Domain: "Down.Example", At: at}); err != nil {
		t.Fatal(err)
	}
	if err := q.MarkRetried(ctx, queue.RetryMark{At: at.Add(time.Second)}); err != nil {
		t.Fatal(err)
	}
	if err := q.MarkRetried(ctx, queue.RetryMark{Domain: "bad domain", At: at}); !errors.Is(err, queue.ErrInvalidDomain) {
		t.Fatalf("mark of an invalid domain: %v, want ErrInvalidDomain", err)
	}
	want := []queue.RetryMark{{Domain: "down.example", At: at}, {At: at.Add(time.Second)}}
	for _, w := range want {
		select {
		case m := <-marks:
			if m.Domain != w.Domain || !m.At.Equal(w.At) {
				t.Fatalf("mark %+v, want %+v", m, w)
			}
		case <-ctx.Done():
			t.Fatalf("no mark %+v", w)
		}
	}
	cancel()
	for range marks { // closed when the watch ends
	}
}
