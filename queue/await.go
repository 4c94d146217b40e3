package queue

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Waiting for JetStream. A node of a cluster that starts before enough of
// the others has no JetStream meta leader, and an R3 stream has no place
// until three nodes are up: creating streams and buckets then fails with a
// timeout, "no responders", "JetStream system temporarily unavailable" or
// "insufficient resources". Those are waited out, each attempt bounded by
// AwaitAttempt, backing off from awaitMinBackoff to awaitMaxBackoff, until
// the caller's context ends; anything else (a stream configuration the
// server refuses) fails at once.
const (
	AwaitAttempt    = 5 * time.Second
	awaitMinBackoff = 250 * time.Millisecond
	awaitMaxBackoff = 5 * time.Second
	// awaitLogEvery is how often a wait is logged (event=nats_waiting),
	// at level info until awaitWarnAfter, then warn.
	awaitLogEvery  = 10 * time.Second
	awaitWarnAfter = time.Minute
)

// Await runs fn (setting up what, e.g. "stream JETRELAY_QUEUE") until it
// succeeds, fails with an error that waiting does not cure, or ctx ends.
// While JetStream is not ready it logs event=nats_waiting with the reason
// at most every 10 s.
func Await(ctx context.Context, log zerolog.Logger, what string, fn func(ctx context.Context) error) error {
	return await(ctx, awaitOptions{log: log, what: what, fn: fn})
}

// Await is the package Await with the cluster's progress (nodes seen) in
// the wait's log line when the server is embedded.
func (q *Queue) Await(ctx context.Context, what string, fn func(ctx context.Context) error) error {
	return await(ctx, awaitOptions{log: q.log, what: what, fn: fn, progress: q.clusterProgress})
}

type awaitOptions struct {
	log      zerolog.Logger
	what     string
	fn       func(ctx context.Context) error
	progress func() string // "" or what the cluster looks like from here
}

func await(ctx context.Context, o awaitOptions) error {
	backoff := awaitMinBackoff
	start := time.Now()
	var logged time.Time
	for {
		actx, cancel := context.WithTimeout(ctx, AwaitAttempt)
		err := o.fn(actx)
		cancel()
		switch {
		case err == nil:
			if !logged.IsZero() {
				o.log.Info().Str("event", "nats_ready").Str("what", o.what).
					Dur("waited", time.Since(start).Round(time.Millisecond)).Msg("JetStream is ready")
			}
			return nil
		case ctx.Err() != nil:
			return fmt.Errorf("%s: stopped while waiting for JetStream (%s): %w", o.what, waitReason(err), ctx.Err())
		case !Transient(err):
			return err
		}
		if time.Since(logged) >= awaitLogEvery {
			logged = time.Now()
			level := zerolog.InfoLevel // a cluster's start takes seconds
			if time.Since(start) >= awaitWarnAfter {
				level = zerolog.WarnLevel
			}
			ev := o.log.WithLevel(level).Str("event", "nats_waiting").Str("what", o.what).
				Str("reason", waitReason(err)).Dur("waited", time.Since(start).Round(time.Second))
			msg := "waiting for JetStream"
			if o.progress != nil {
				if p := o.progress(); p != "" {
					msg = "waiting for the JetStream cluster: " + p
				}
			}
			ev.Msg(msg)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: stopped while waiting for JetStream (%s): %w", o.what, waitReason(err), ctx.Err())
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, awaitMaxBackoff)
	}
}

// transientCodes are the JetStream API error codes of a cluster that is
// not ready yet: no meta leader, not assigned, no peers for placement,
// insufficient resources (too few servers up for the replicas), no
// stream leader yet.
var transientCodes = map[jetstream.ErrorCode]bool{
	10004: true, // JSClusterIncompleteErr
	10005: true, // JSClusterNoPeersErrF: no suitable peers for placement
	10007: true, // JSClusterNotAssignedErr
	10008: true, // JSClusterNotAvailErr: JetStream system temporarily unavailable
	10009: true, // JSClusterNotLeaderErr
	10023: true, // JSInsufficientResourcesErr
}

// Transient reports whether err means that JetStream is not ready yet
// (waiting may cure it) rather than that the request is wrong.
func Transient(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrJetStreamNotEnabled) ||
		errors.Is(err, nats.ErrDisconnected) || errors.Is(err, nats.ErrConnectionReconnecting) {
		return true
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.Code == 503 || transientCodes[apiErr.ErrorCode]
	}
	return false
}

// waitReason says in words why JetStream is not ready.
func waitReason(err error) string {
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout):
		return "no answer from JetStream within " + AwaitAttempt.String()
	case errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrJetStreamNotEnabled):
		return "JetStream does not answer yet (no responders)"
	case errors.As(err, &apiErr):
		return strings.TrimSpace(apiErr.Description)
	}
	return err.Error()
}

// clusterProgress says how many nodes this embedded node sees, counting
// itself, against the replicas the streams need: "2 of 3 nodes seen".
// "" when not an embedded cluster node.
func (q *Queue) clusterProgress() string {
	if q.ns == nil || q.opts.Cluster == nil {
		return ""
	}
	seen := map[string]bool{}
	if rz, err := q.ns.Routez(nil); err == nil {
		for _, r := range rz.Routes {
			seen[r.RemoteID] = true
		}
	}
	if n, want := len(seen)+1, q.opts.Replicas; n < want {
		return fmt.Sprintf("%d of %d nodes seen", n, want)
	}
	return fmt.Sprintf("%d nodes seen", len(seen)+1)
}
