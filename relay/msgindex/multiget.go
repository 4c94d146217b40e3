package msgindex

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// getMany fetches the summaries of ids in ids' order; a missing one
// (expired) is a zero Summary. It asks for all of them in one batched
// direct get (the server's multi_last: the last message of each key's
// subject, ended by an EOB status), and falls back to one direct get per
// key when the server refuses that.
func (x *Index) getMany(ctx context.Context, ids []string) ([]Summary, error) {
	out, err := x.multiGet(ctx, ids)
	if err == nil {
		return out, nil
	}
	x.o.Log.Debug().Err(err).Msg("message index: batched get refused; getting one by one")
	return x.getEach(ctx, ids)
}

// multiGetWait bounds one batched get.
const multiGetWait = 5 * time.Second

var errMultiGet = errors.New("msgindex: batched get")

func (x *Index) multiGet(ctx context.Context, ids []string) ([]Summary, error) {
	pos := make(map[string]int, len(ids))
	subjects := make([]string, 0, len(ids))
	for i, id := range ids {
		if k, ok := key(id); ok {
			s := "$KV." + Bucket + "." + k
			pos[s] = i
			subjects = append(subjects, s)
		}
	}
	out := make([]Summary, len(ids))
	if len(subjects) == 0 {
		return out, nil
	}
	req, err := json.Marshal(map[string]any{"multi_last": subjects})
	if err != nil {
		return nil, err
	}
	nc := x.js.Conn()
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest("$JS.API.DIRECT.GET.KV_"+Bucket, inbox, req); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, multiGetWait)
	defer cancel()
	for range len(subjects) + 1 {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errMultiGet, err)
		}
		switch st := m.Header.Get(statusHdr); {
		case st == "204" || (st == "404" && strings.Contains(m.Header.Get(descrHdr), "No Results")):
			return out, nil // end of batch, or none of the keys exists
		case st != "":
			return nil, fmt.Errorf("%w: status %s %s", errMultiGet, st, m.Header.Get(descrHdr))
		}
		i, ok := pos[m.Header.Get(jsSubjectHdr)]
		var r record
		if ok && json.Unmarshal(m.Data, &r) == nil {
			out[i] = r.Summary
		}
	}
	return nil, fmt.Errorf("%w: no end of batch", errMultiGet)
}

// Headers of a direct get's replies (nats.go does not export them).
const (
	jsSubjectHdr = "Nats-Subject"
	statusHdr    = "Status"
	descrHdr     = "Description"
)

// getEach fetches the summaries one direct get each, writers at a time.
func (x *Index) getEach(ctx context.Context, ids []string) ([]Summary, error) {
	out := make([]Summary, len(ids))
	errs := make([]error, len(ids))
	sem := make(chan struct{}, writers)
	var wg sync.WaitGroup
	for i, id := range ids {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			r, _, err := x.load(ctx, id)
			if err == nil {
				out[i] = r.Summary
			} else if !errors.Is(err, ErrNotFound) {
				errs[i] = err
			}
		}()
	}
	wg.Wait()
	return out, errors.Join(errs...)
}
