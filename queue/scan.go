package queue

// Reading the queue stream without a consumer: batched direct gets
// ($JS.API.DIRECT.GET, stream AllowDirect), which leave no server state
// and do not disturb the work-queue's one consumer.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Batched direct gets: size bounds and reply headers.
const (
	scanBatch     = 256
	scanBytes     = 16 << 20
	hdrNumPending = "Nats-Num-Pending"
	hdrTimeStamp  = "Nats-Time-Stamp"
)

// scan calls fn for every stored message matching filter with a sequence
// from from up to upTo (0 = no bound), in stream order, with batched direct
// gets (headers Nats-Subject, Nats-Sequence, Nats-Time-Stamp added).
func (q *Queue) scan(ctx context.Context, filter string, from, upTo uint64, fn func(*nats.Msg) error) error {
	for {
		last, more, err := q.directBatch(ctx, filter, from, scanBatch, func(m *nats.Msg, seq uint64) (bool, error) {
			if upTo > 0 && seq > upTo {
				return false, nil
			}
			return true, fn(m)
		})
		if err != nil || !more || (upTo > 0 && last >= upTo) {
			return err
		}
		from = last + 1
	}
}

// first returns the lowest-sequence message matching filter from seq on,
// and how many more match after it (nil when none).
func (q *Queue) first(ctx context.Context, filter string, from uint64) (*nats.Msg, uint64, error) {
	var got *nats.Msg
	var left uint64
	_, _, err := q.directBatch(ctx, filter, from, 1, func(m *nats.Msg, _ uint64) (bool, error) {
		got = m
		left, _ = strconv.ParseUint(m.Header.Get(hdrNumPending), 10, 64)
		return false, nil
	})
	return got, left, err
}

// directBatch sends one batched direct-get request and hands each reply to
// fn until it returns false. more says whether matching messages remain
// after last (the highest sequence received).
func (q *Queue) directBatch(
	ctx context.Context, filter string, from uint64, batch int, fn func(*nats.Msg, uint64) (bool, error),
) (last uint64, more bool, err error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	req, _ := json.Marshal(map[string]any{
		"seq": max(from, 1), "next_by_subj": filter, "batch": batch, "max_bytes": scanBytes,
	})
	inbox := q.nc.NewRespInbox()
	sub, err := q.nc.SubscribeSync(inbox)
	if err != nil {
		return 0, false, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := q.nc.PublishRequest("$JS.API.DIRECT.GET."+StreamFor(filter), inbox, req); err != nil {
		return 0, false, err
	}
	want := true
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if errors.Is(err, nats.ErrNoResponders) && StreamFor(filter) == ParkStreamName {
			return last, false, nil // no park stream (an older jetrelay's NATS): nothing parked
		}
		if err != nil {
			return last, false, fmt.Errorf("queue: direct get %s: %w", filter, err)
		}
		switch status := m.Header.Get("Status"); status {
		case "":
		case "404":
			return last, false, nil
		case "204": // end of batch
			np, _ := strconv.ParseUint(m.Header.Get(hdrNumPending), 10, 64)
			return last, want && np > 0, nil
		default:
			return last, false, fmt.Errorf("queue: direct get %s: %s %s", filter, status, m.Header.Get("Description"))
		}
		seq, _ := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
		if !want {
			continue // drain the rest of the batch
		}
		if want, err = fn(m, seq); err != nil {
			return last, false, err
		}
		if want {
			last = seq
		}
	}
}
