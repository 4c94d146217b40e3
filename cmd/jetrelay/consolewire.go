package main

import (
	"context"
	"crypto/tls"
	"fmt"

	"github.com/jetrelay/jetrelay/relay/admin"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/console"
)

// openConsole builds the web console of admin.console (nil when it is
// off) and the admin listener's TLS configuration of admin.tls (nil:
// plain HTTP). The console's session bucket is opened waiting for
// JetStream like the other buckets (queue.Await).
func (r *relay) openConsole(ctx context.Context) (admin.Console, *tls.Config, error) {
	var tlsCfg *tls.Config
	if t := r.cfg.Admin.TLS; t.Enabled() {
		cert, err := tls.LoadX509KeyPair(t.Cert, t.Key)
		if err != nil {
			return nil, nil, fmt.Errorf("admin.tls: %w", err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	cc := r.cfg.Admin.Console
	if !cc.Enabled {
		return nil, tlsCfg, nil
	}
	users := consoleUsers(r.cfg)
	o := console.Options{
		Users: users, Secure: tlsCfg != nil, JetStream: r.q.JetStream(), Replicas: r.q.Replicas(), Queue: r.q,
		Events: r.emitter, Bouncer: r.bouncer, Suppressions: r.bouncer.Suppressions(), Logger: r.log,
	}
	r.consoleSources(&o)
	var con *console.Console
	err := r.q.Await(ctx, "bucket "+console.Bucket, func(ctx context.Context) error {
		var err error
		con, err = console.Open(ctx, o)
		return err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("console: %w", err)
	}
	r.console = con
	if len(users) == 0 {
		r.log.Warn().Str("event", "config_warning").Str("path", "admin.console.users").
			Msg("the console is on without users: nobody can log in (jetrelay console passwd NAME makes one)")
	}
	return con, tlsCfg, nil
}

// consoleSources gives the console the message index (msgindexwire.go)
// and the cluster-wide counts (statswire.go) this node keeps up to date.
func (r *relay) consoleSources(o *console.Options) {
	if r.msgIndex != nil {
		o.Index = r.msgIndex
	}
	if r.stats != nil {
		o.Stats = r.stats.store
	}
}

// consoleUsers are admin.console.users as the console takes them.
func consoleUsers(cfg *config.Config) []console.User {
	users := make([]console.User, 0, len(cfg.Admin.Console.Users))
	for _, u := range cfg.Admin.Console.Users {
		users = append(users, console.User{Name: u.Name, PasswordHash: u.PasswordHash, Role: u.Role})
	}
	return users
}

// prepareConsole readies a reload's admin.console.users (live: the next
// request sees them); a no-op without a console.
func (r *relay) prepareConsole(cfg *config.Config) (func(), error) {
	if r.console == nil {
		return func() {}, nil
	}
	apply, err := r.console.PrepareUsers(consoleUsers(cfg))
	if err != nil {
		return nil, fmt.Errorf("admin.console.users: %w", err)
	}
	return apply, nil
}
