package main

import (
	"context"
	"fmt"
	"time"

	"github.com/jetrelay/jetrelay/relay/msgindex"
)

// msgIndexRetry is how long the indexer waits before starting again after
// an error (JetStream away, the consumer not creatable yet).
const msgIndexRetry = 5 * time.Second

// startMsgIndex opens the message index (events.index) that the console
// searches and, unless events.index.enabled is false, runs this node's
// share of the indexer until ctx (serve's) ends. The index is derived
// from the events stream: indexing never touches the mail path, and a
// node that stops mid-batch leaves its events for another node.
func (r *relay) startMsgIndex(ctx context.Context) error {
	ix := r.cfg.Events.Index
	o := msgindex.Options{Replicas: r.cfg.NATS.Replicas, Retention: r.cfg.Events.MaxAge.D(),
		MaxBytes: int64(ix.MaxBytes), Log: r.log}
	err := r.q.Await(ctx, "bucket "+msgindex.Bucket, func(ctx context.Context) error {
		var err error
		r.msgIndex, err = msgindex.Open(ctx, r.q.JetStream(), o)
		return err
	})
	if err != nil {
		return fmt.Errorf("message index: %w", err)
	}
	if ix.On() {
		go r.runMsgIndex(ctx)
	}
	return nil
}

// runMsgIndex runs the indexer, again after an error, until ctx ends.
func (r *relay) runMsgIndex(ctx context.Context) {
	for {
		err := r.msgIndex.Run(ctx)
		if ctx.Err() != nil {
			return
		}
		r.log.Warn().Err(err).Str("event", "msgindex_error").Msg("message index stopped; starting again")
		t := time.NewTimer(msgIndexRetry)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}
