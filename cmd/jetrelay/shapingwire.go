package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/deliver"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/shaping"
	"github.com/rs/zerolog"
)

// shapingSettings: delivery.shaping with its included file, as the Shaper
// takes it. The default's connections is delivery.max_per_destination
// (its alias; config keeps both equal). The error is a reply expression
// that does not compile, which validation has already reported.
func shapingSettings(cfg *config.Config) (shaping.Settings, error) {
	s := cfg.Delivery.Shaping
	set := shaping.Settings{
		Default: shaping.Limits{
			Connections: cfg.Delivery.MaxPerDestination, Rate: shapingRate(s.Default.Rate),
			PerConnection: s.Default.PerConnection, ConnectionRate: shapingRate(s.Default.ConnectionRate),
		},
		BackoffFor: s.BackoffFor.D(),
	}
	for _, p := range s.AllProviders() {
		mx := make([]string, len(p.MX))
		for i, m := range p.MX {
			mx[i] = strings.TrimSuffix(strings.ToLower(m), ".")
		}
		set.Providers = append(set.Providers, shaping.Provider{Name: p.Name, MX: mx, Limits: shaping.Limits{
			Connections: p.Connections, Rate: shapingRate(p.Rate), PerConnection: p.PerConnection,
			ConnectionRate: shapingRate(p.ConnectionRate), PerSource: p.PerSource,
		}})
	}
	for i, r := range s.AllRules() {
		re, err := config.ReplyPattern(r.Reply)
		if err != nil {
			return set, fmt.Errorf("delivery.shaping rule %d: %w", i+1, err)
		}
		name := r.Name
		if name == "" {
			name = fmt.Sprintf("rule %d", i+1)
		}
		set.Rules = append(set.Rules, shaping.Rule{
			Name: name, Providers: r.Providers, Reply: re,
			Threshold: r.Threshold.Count, Window: r.Threshold.Window,
			Action: shaping.Action{Suspend: r.Action.Suspend.D(), Rate: shapingRate(r.Action.Rate), For: r.Action.For.D()},
		})
	}
	return set, nil
}

func shapingRate(r config.Rate) shaping.Rate { return shaping.Rate{Count: r.Count, Per: r.Per} }

// shapingNode names this process as the owner of its connection leases:
// the embedded server's name, or the host name, with the process id, so
// that two relays on one host (one NATS) never share leases.
func shapingNode(cfg *config.Config) string {
	base := cfg.NATS.ServerName
	if base == "" || !cfg.NATS.Embedded() {
		base = cfg.Hostname
	}
	return fmt.Sprintf("%s/%d", base, os.Getpid())
}

// shapingEvent turns a Shaper's change into an event (event=shaping):
// provider (or, for a destination of no provider, domain), rule, action,
// until, the reply that triggered it, status began, ended or resumed, and
// a summary in reason.
func shapingEvent(c shaping.Change) *events.Event {
	e := &events.Event{Event: events.Shaping, Provider: c.Class.Provider, Rule: c.Rule, Action: c.Action,
		Reply: c.Reason, Status: "began"}
	if c.Class.Provider == "" {
		e.Domain = strings.TrimPrefix(c.Class.Key, "dest:")
	}
	switch {
	case c.Resumed:
		e.Status = "resumed"
	case c.Ended:
		e.Status = "ended"
	}
	if !c.Until.IsZero() {
		u := c.Until.UTC()
		e.Until = &u
	}
	// Reason sums it up for `jetrelay logs`' text lines.
	what := c.Action
	if c.Action != shaping.ActionSuspend && !c.Rate.Unlimited() {
		what = "rate " + c.Rate.String()
	}
	who := c.Class.Provider
	if who == "" {
		who = e.Domain
	}
	e.Reason = fmt.Sprintf("%s: %s %s (%s)", who, what, e.Status, c.Rule)
	if e.Until != nil && !c.Ended {
		e.Reason = fmt.Sprintf("%s: %s until %s (%s)", who, what, e.Until.Format(time.RFC3339), c.Rule)
	}
	return e
}

// openShaper opens the Shaper (its bucket, waiting while JetStream is not
// ready, like the other buckets) with the configured shaping; its changes
// become events.
func (r *relay) openShaper(ctx context.Context) error {
	set, err := shapingSettings(r.cfg)
	if err != nil {
		return err
	}
	r.shapingSet.Store(&set)
	return r.q.Await(ctx, "bucket "+shaping.Bucket, func(ctx context.Context) error {
		var err error
		r.shaper, err = shaping.Open(ctx, shaping.Options{
			JetStream: r.q.JetStream(), Replicas: r.q.Replicas(), Node: shapingNode(r.cfg), Logger: r.log,
			Events: r.publishShaping,
		}, set)
		return err
	})
}

// publishShaping stores a Shaper's change in the events stream. Not
// through the Emitter: the Shaper has logged it already (event=shaping).
func (r *relay) publishShaping(c shaping.Change) {
	e := shapingEvent(c)
	e.Time = time.Now().UTC()
	r.evPub.Publish(e)
}

// shapingStatus is every provider's state under the shaping in effect
// (the /metrics gauges).
func (r *relay) shapingStatus(ctx context.Context) ([]shaping.ProviderStatus, error) {
	return shaping.Status(ctx, r.q.JetStream(), *r.shapingSet.Load())
}

// logSourceProblems logs every egress source this host cannot bind
// (deliver.CheckSources); connections through it fail until it can.
func logSourceProblems(cfg *config.Config, log zerolog.Logger) {
	for _, err := range deliver.CheckSources(egressSources(cfg)) {
		log.Error().Str("event", "source_unavailable").Err(err).
			Msg("an egress source cannot be bound on this host; connections through it fail")
	}
}
