package main

import (
	"context"
	"fmt"
	"reflect"
	"time"

	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/events"
)

// Reload is all or nothing (DESIGN-NOTES "Reload is all or nothing"):
// every component first prepares its new state from the new settings —
// everything that can fail (DKIM keys, CA file, resolver, networks, users,
// the VERP key) — and only when all of them succeeded are the prepared
// states applied, one after the other, by functions that cannot fail. A
// refusal anywhere changes nothing anywhere. Settings only read at start
// (config.Restart) keep their running values and are named in the log line
// as restart_needed; "status":"ok" means everything that changed was
// applied.

// reloadTimeout bounds the one reload step that talks to NATS (the events
// stream's limits).
const reloadTimeout = 10 * time.Second

// reload re-reads the config file (SIGHUP); a bad file, or one a component
// refuses, is refused as a whole and the old config kept.
func (r *relay) reload() {
	if r.cfg.Path == "" {
		r.log.Warn().Str("event", "reload").Msg("SIGHUP ignored: running the built-in default (no --config)")
		return
	}
	next, err := config.Load(r.cfg.Path)
	if err != nil {
		r.log.Error().Str("event", "reload").Str("status", reloadRefused).Err(err).
			Msg("new config refused; keeping the old one")
		return
	}
	for _, w := range next.Warnings() {
		r.log.Warn().Str("event", "config_warning").Str("path", w.Path).Int("line", w.Line).Msg(w.Msg)
	}
	r.reloadTo(next)
}

// Reload outcomes, the log line's status.
const (
	reloadOK            = "ok"             // everything that changed was applied
	reloadRestartNeeded = "restart_needed" // the rest was applied
	reloadRefused       = "refused"        // nothing changed
)

// reloadTo makes next the running configuration as far as it can be
// without a restart, or refuses it as a whole; it logs the outcome and
// returns its status.
func (r *relay) reloadTo(next *config.Config) string {
	ch, err := r.applyConfig(next)
	if err != nil {
		r.log.Error().Str("event", "reload").Str("status", reloadRefused).Err(err).
			Msg("new config refused; nothing changed")
		return reloadRefused
	}
	ev := r.log.Info().Str("event", "reload").Strs("applied", nonNil(ch.Live)).
		Int("users", len(r.cfg.Submission.Users))
	if len(ch.Restart) > 0 {
		ev.Str("status", reloadRestartNeeded).Strs("restart_needed", ch.Restart).
			Msg("config reloaded; the settings in restart_needed keep their running values until a restart")
		return reloadRestartNeeded
	}
	ev.Str("status", reloadOK).Msg("config reloaded")
	return reloadOK
}

// applyConfig makes next the running configuration, all or nothing: it
// returns what changed, or an error and changes nothing.
func (r *relay) applyConfig(next *config.Config) (config.Changes, error) {
	ch := config.Diff(r.cfg, next)
	cfg := config.KeepRestart(r.cfg, next)
	signer, err := newDKIMSigner(cfg)
	if err != nil {
		return ch, fmt.Errorf("dkim: %w", err)
	}
	applySubmit, err := r.sub.Prepare(submitSettings(cfg))
	if err != nil {
		return ch, err
	}
	applyBounce, err := r.bouncer.Prepare(bounceSettings(cfg))
	if err != nil {
		return ch, err
	}
	shapingSet, err := shapingSettings(cfg)
	if err != nil {
		return ch, err
	}
	applyDeliver, err := r.eng.Prepare(deliverSettings(cfg))
	if err != nil {
		return ch, err
	}
	hooks, err := webhookHooks(cfg)
	if err != nil {
		return ch, err
	}
	applyConsole, err := r.prepareConsole(cfg) // consolewire.go
	if err != nil {
		return ch, err
	}
	// Last, as the only step outside this process: when the stream refuses
	// its new limits, nothing has been applied yet.
	if so := eventStreamOptions(cfg); !reflect.DeepEqual(so, eventStreamOptions(r.cfg)) {
		ctx, cancel := context.WithTimeout(context.Background(), reloadTimeout)
		defer cancel()
		if _, err := events.EnsureStream(ctx, r.q.JetStream(), so); err != nil {
			return ch, fmt.Errorf("events stream limits: %w", err)
		}
	}
	// The Bouncer first: it accepts bounces for the new VERP domain (and
	// still the old one) before delivery mints tokens for it.
	applyBounce()
	r.applyStats(cfg) // the guard's rules
	// Shaping before delivery: the next connection decision sees the new
	// limits; connections open within them stay.
	r.shaper.Apply(shapingSet)
	r.shapingSet.Store(&shapingSet)
	applyDeliver()
	applySubmit()
	r.webhooks.Apply(hooks)
	applyConsole()
	r.sub.SetSigner(signer)
	r.tlsrpt.setSigner(signer)
	r.cfg = cfg
	applyMemoryLimit(cfg)
	applyGCPercent(cfg)
	return ch, nil
}

// nonNil makes an empty list log as [] rather than null.
func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
