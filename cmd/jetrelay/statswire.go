package main

import (
	"context"
	"time"

	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/guard"
	"github.com/jetrelay/jetrelay/relay/stats"
)

// statsStopTimeout bounds the aggregator's last write at shutdown.
const statsStopTimeout = 15 * time.Second

// statsWire is a running relay's share of the cluster-wide counts
// (relay/stats) and its bounce-rate guard (relay/guard). Every node runs
// both: the aggregators share one consumer, so each event is counted once.
type statsWire struct {
	store  *stats.Store
	guard  *guard.Guard
	cancel context.CancelFunc
	done   chan struct{}
}

// startStats opens the stats and guard buckets (waiting while JetStream
// is not ready, as the other buckets do), lets submission ask the guard at
// MAIL, and runs the aggregator until stopStats. Call it after submit.New.
func (r *relay) startStats(ctx context.Context) error {
	w := &statsWire{done: make(chan struct{})}
	err := r.q.Await(ctx, "bucket "+stats.Bucket, func(ctx context.Context) error {
		var err error
		w.store, err = stats.Open(ctx, r.q.JetStream(), stats.Options{Replicas: r.q.Replicas(), Log: r.log,
			AfterFlush: func(ctx context.Context, users []string) { w.guard.Evaluate(ctx, users) }})
		return err
	})
	if err != nil {
		return err
	}
	err = r.q.Await(ctx, "bucket "+guard.Bucket, func(ctx context.Context) error {
		var err error
		w.guard, err = guard.Open(ctx, guard.Options{JetStream: r.q.JetStream(), Replicas: r.q.Replicas(),
			Stats: w.store, Events: r.emitter, Log: r.log})
		return err
	})
	if err != nil {
		return err
	}
	w.guard.SetRules(guardRules(r.cfg))
	r.sub.SetPauses(w.guard)
	runCtx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	go func() {
		defer close(w.done)
		_ = w.store.Run(runCtx)
	}()
	r.stats = w
	return nil
}

// applyStats gives the guard a reload's rules (submission.users[].bounce_guard
// and submission.bounce_guard are live).
func (r *relay) applyStats(cfg *config.Config) {
	if r.stats != nil {
		r.stats.guard.SetRules(guardRules(cfg))
	}
}

// stopStats stops the aggregator (it writes what it holds first) and the
// guard's watcher; before the events publisher and NATS close.
func (r *relay) stopStats() {
	w := r.stats
	if w == nil {
		return
	}
	w.cancel()
	select {
	case <-w.done:
	case <-time.After(statsStopTimeout):
		r.log.Warn().Str("event", "stats_stop_timeout").
			Msg("stats aggregator still writing at shutdown; its unacknowledged events are counted by another node or the next start")
	}
	w.guard.Close()
}

// guardRules: each user's bounce guard in force (its own, else
// submission.bounce_guard), as the guard takes it.
func guardRules(cfg *config.Config) map[string]guard.Rule {
	out := map[string]guard.Rule{}
	for _, u := range cfg.Submission.Users {
		g := cfg.GuardOf(u)
		if g == nil {
			continue
		}
		out[u.Name] = guard.Rule{Warn: g.Warn.Frac, Pause: g.Pause.Frac, ComplaintWarn: g.ComplaintWarn.Frac,
			ComplaintPause: g.ComplaintPause.Frac, Window: g.Window.D(), MinVolume: int64(g.MinVolume)}
	}
	return out
}
