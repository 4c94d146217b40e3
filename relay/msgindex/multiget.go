package msgindex

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// stored is a summary as read from the bucket: the decoded record (nil:
// none stored, or unreadable), its revision (0: none stored) and its
// stored bytes.
type stored struct {
	rec *record
	rev uint64
	raw []byte
}

// summary is the stored summary, a zero Summary when there is none.
func (s stored) summary() Summary {
	if s.rec == nil {
		return Summary{}
	}
	return s.rec.Summary
}

// getMany fetches the summaries of ids in ids' order; a missing one
// (expired) is a zero Summary.
func (x *Index) getMany(ctx context.Context, ids []string) ([]Summary, error) {
	return summaries(x.readMany(ctx, ids))
}

// readMany reads the stored summaries of ids in ids' order (a missing one
// has revision 0 and no record). It asks for all of them in one batched
// direct get (the server's multi_last: the last message of each key's
// subject, ended by an EOB status), and falls back to one direct get per
// key when the server refuses that.
func (x *Index) readMany(ctx context.Context, ids []string) ([]stored, error) {
	out, err := x.multiRead(ctx, ids)
	if err == nil {
		return out, nil
	}
	x.o.Log.Debug().Err(err).Msg("message index: batched get refused; getting one by one")
	return x.readEach(ctx, ids)
}

// multiGetWait bounds one batched get.
const multiGetWait = 5 * time.Second

var errMultiGet = errors.New("msgindex: batched get")

// multiGet is getMany through the batched get only.
func (x *Index) multiGet(ctx context.Context, ids []string) ([]Summary, error) {
	return summaries(x.multiRead(ctx, ids))
}

// getEach is getMany one direct get at a time only.
func (x *Index) getEach(ctx context.Context, ids []string) ([]Summary, error) {
	return summaries(x.readEach(ctx, ids))
}

// summaries are the Summaries of stored reads (zero ones for none).
func summaries(st []stored, err error) ([]Summary, error) {
	if err != nil {
		return nil, err
	}
	out := make([]Summary, len(st))
	for i, s := range st {
		out[i] = s.summary()
	}
	return out, nil
}

func (x *Index) multiRead(ctx context.Context, ids []string) ([]stored, error) {
	pos := make(map[string]int, len(ids))
	subjects := make([]string, 0, len(ids))
	for i, id := range ids {
		if k, ok := key(id); ok {
			s := "$KV." + Bucket + "." + k
			pos[s] = i
			subjects = append(subjects, s)
		}
	}
	out := make([]stored, len(ids))
	if len(subjects) == 0 {
		return out, nil
	}
	req, err := json.Marshal(map[string]any{"multi_last": subjects})
	if err != nil {
		return nil, err
	}
	nc := x.js.Conn()
	inbox := nc.NewRespInbox()
	// A channel as long as the replies can be (one per key, then the end
	// of batch): SubscribeSync would allocate 64k slots per call.
	replies := make(chan *nats.Msg, len(subjects)+2)
	sub, err := nc.ChanSubscribe(inbox, replies)
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest("$JS.API.DIRECT.GET."+bucketStream, inbox, req); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, multiGetWait)
	defer cancel()
	for range len(subjects) + 1 {
		var m *nats.Msg
		select {
		case m = <-replies:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %w", errMultiGet, ctx.Err())
		}
		switch st := m.Header.Get(statusHdr); {
		case st == "204" || (st == "404" && strings.Contains(m.Header.Get(descrHdr), "No Results")):
			return out, nil // end of batch, or none of the keys exists
		case st != "":
			return nil, fmt.Errorf("%w: status %s %s", errMultiGet, st, m.Header.Get(descrHdr))
		}
		i, ok := pos[m.Header.Get(jsSubjectHdr)]
		if !ok {
			continue
		}
		rev, err := strconv.ParseUint(m.Header.Get(jsSequenceHdr), 10, 64)
		if err != nil || rev == 0 {
			return nil, fmt.Errorf("%w: reply without a sequence", errMultiGet)
		}
		out[i] = stored{rev: rev, raw: m.Data}
		var r record
		if err := json.Unmarshal(m.Data, &r); err != nil {
			// Unreadable: left out of searches; the indexer writes it anew.
			x.o.Log.Debug().Err(err).Str("queue_id", ids[i]).Msg("message index: unreadable summary")
			continue
		}
		out[i].rec = &r
	}
	return nil, fmt.Errorf("%w: no end of batch", errMultiGet)
}

// Headers of a direct get's replies (nats.go does not export them).
const (
	jsSubjectHdr  = "Nats-Subject"
	jsSequenceHdr = "Nats-Sequence"
	statusHdr     = "Status"
	descrHdr      = "Description"
)

// readEach reads the summaries one direct get each, writers at a time.
func (x *Index) readEach(ctx context.Context, ids []string) ([]stored, error) {
	out := make([]stored, len(ids))
	errs := make([]error, len(ids))
	sem := make(chan struct{}, writers)
	var wg sync.WaitGroup
	for i, id := range ids {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			s, err := x.load(ctx, id)
			if err == nil {
				out[i] = s
			} else if !errors.Is(err, ErrNotFound) {
				errs[i] = err
			}
		}()
	}
	wg.Wait()
	return out, errors.Join(errs...)
}
