package clusterview

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// maxStreamQueries bounds the stream info requests in flight at once.
const maxStreamQueries = 8

// offlineAfter is how long a replica that is not current may go unheard
// from before it counts as offline (nats-server's lostQuorumInterval).
const offlineAfter = 10 * time.Second

// streams returns every stream of the account (KnownStreams too), sorted
// by name, and why the list may be incomplete.
func streams(ctx context.Context, o Options) ([]Stream, error) {
	names, listErr := streamNames(ctx, o)
	for _, k := range o.KnownStreams {
		if !slices.Contains(names, k) {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	out := make([]Stream, len(names))
	sem := make(chan struct{}, maxStreamQueries)
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			out[i] = stream(ctx, o, name)
		}()
	}
	wg.Wait()
	if listErr != nil {
		return out, fmt.Errorf("cannot list the streams: %s", describe(listErr))
	}
	return out, nil
}

// streamNames lists the account's streams (answered by the meta leader).
func streamNames(ctx context.Context, o Options) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	l := o.JetStream.StreamNames(ctx)
	var names []string
	for n := range l.Name() {
		names = append(names, n)
	}
	if err := l.Err(); err != nil {
		return names, err
	}
	return names, nil
}

// stream asks for one stream's info and judges its group.
func stream(ctx context.Context, o Options, name string) Stream {
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	s, err := o.JetStream.Stream(ctx, name)
	if err != nil {
		return Stream{Name: name, Error: describe(err)}
	}
	return fromInfo(s.CachedInfo())
}

// fromInfo is a stream's group as its info shows it.
func fromInfo(info *jetstream.StreamInfo) Stream {
	s := Stream{Name: info.Config.Name, Configured: max(info.Config.Replicas, 1), Replicas: []Replica{}}
	if info.Cluster == nil {
		// A server without cluster information answered for it: its own.
		s.Current, s.Quorum = s.Configured, true
		return s
	}
	s.Leader = info.Cluster.Leader
	for _, p := range info.Cluster.Replicas {
		current := p.Current && !p.Offline
		// Active is the time since the leader last heard from it; 0
		// when it has not since it became leader.
		heard := p.Active > 0 && p.Active <= offlineAfter
		offline := p.Offline || (!current && !heard)
		s.Replicas = append(s.Replicas, Replica{Name: p.Name, Current: current, Lag: p.Lag, Offline: offline})
		if current {
			s.Current++
		}
	}
	if s.Leader != "" {
		s.Current++
	}
	s.Current = min(s.Current, s.Configured)
	s.Quorum = s.Leader != "" && s.Current > s.Configured/2
	return s
}

// consumer returns the delivery consumer's counts.
func consumer(ctx context.Context, o Options) Consumer {
	c := Consumer{Stream: o.ConsumerStream, Name: o.Consumer}
	if o.Consumer == "" {
		return c
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	cons, err := o.JetStream.Consumer(ctx, o.ConsumerStream, o.Consumer)
	if err != nil {
		c.Error = describe(err)
		return c
	}
	info := cons.CachedInfo()
	c.Pending, c.AckPending = info.NumPending, info.NumAckPending
	return c
}

// QueueReady reports whether stream (the queue stream) has a leader
// now: a stream info answered within the deadline of ctx that names one.
// Account info alone is not enough: with quorum lost a server may answer
// from its own state, and the queue stream's group may have no leader
// while the meta group has one.
func QueueReady(ctx context.Context, js jetstream.JetStream, stream string) error {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("stream %s: %s", stream, describe(err))
	}
	info := s.CachedInfo()
	if info.Cluster != nil && info.Cluster.Leader == "" {
		return fmt.Errorf("stream %s has no leader (quorum lost?)", stream)
	}
	return nil
}

// describe turns a JetStream error into a short operator's reason.
func describe(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "no answer in time (no leader, or its servers are down)"
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return "not found"
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		return "consumer not found"
	}
	return err.Error()
}
