package main

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/nats-io/nats.go/jetstream"
)

// Acting on a deferred entry (retry, hold, release of a held schedule)
// replaces its message schedule with one firing at once (queue:
// rescheduleNow); the server moves it to its new subject a moment later.
// Until then `queue ls` counts it in its old state. So that the next
// command shows what the operator just did, an action waits (bounded) for
// those moves.
const (
	settleWait = 10 * time.Second
	settlePoll = 50 * time.Millisecond
)

// moving collects the entries an action rescheduled.
type moving struct {
	items []*queue.Item
	start time.Time
}

func newMoving() *moving { return &moving{start: time.Now()} }

// add notes an entry the action changed while it was a schedule.
func (m *moving) add(it *queue.Item, done bool) {
	if !done || it == nil {
		return
	}
	if prefix, _, _, err := queue.ParseSubject(it.Subject); err == nil && prefix == queue.SubjScheduled {
		m.items = append(m.items, it)
	}
}

// wait returns once every noted entry has left its schedule subject, or
// reports false when settleWait ran out first.
func (m *moving) wait(ctx context.Context, q *queue.Queue) bool {
	if len(m.items) == 0 {
		return true
	}
	s, err := q.Stream(ctx)
	if err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, settleWait)
	defer cancel()
	tick := time.NewTicker(settlePoll)
	defer tick.Stop()
	for _, it := range m.items {
		for !m.moved(ctx, s, it.Subject) {
			select {
			case <-ctx.Done():
				return false
			case <-tick.C:
			}
		}
	}
	return true
}

// moved reports whether subject no longer holds a schedule due by the
// time the action started (a later deferral's schedule does not count).
func (m *moving) moved(ctx context.Context, s jetstream.Stream, subject string) bool {
	msg, err := s.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return true
	}
	if err != nil {
		return false
	}
	at, ok := strings.CutPrefix(msg.Header.Get("Nats-Schedule"), "@at ")
	if !ok {
		return true
	}
	t, err := time.Parse(time.RFC3339, at)
	return err == nil && t.After(m.start.Add(time.Second))
}
