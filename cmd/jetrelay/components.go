package main

import (
	"net/netip"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/bounce"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/deliver"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/submit"
	"github.com/rs/zerolog"
)

// Each component reads only its own settings; these functions are the one
// place that maps the configuration file onto them, at start and on every
// reload. A value one component needs from another's section is named
// here, not looked up by the component.

// deliverSettings: the delivery section with its egress sources and
// pools, the EHLO name, each submission user's pool, and from bounces
// whether VERP is on and when delay notices are due.
func deliverSettings(cfg *config.Config) deliver.Settings {
	return deliver.Settings{
		Delivery:         cfg.Delivery,
		Hostname:         cfg.Hostname,
		VERP:             cfg.Bounces.VERPDomain != "",
		DelayNoticeAfter: cfg.Bounces.DelayNoticeAfter.D(),
		Sources:          egressSources(cfg),
		Pools:            cfg.Delivery.Pools,
		UserPools:        userPools(cfg),
	}
}

// egressSources: delivery.sources (validated: every address parses).
func egressSources(cfg *config.Config) []deliver.Source {
	var out []deliver.Source
	for _, s := range cfg.Delivery.Sources {
		addr, _ := netip.ParseAddr(s.Address)
		out = append(out, deliver.Source{Name: s.Name, Addr: addr.Unmap(), EHLO: s.EHLO})
	}
	return out
}

// userPools: submission.users[].pool by user name, for the users that
// name one.
func userPools(cfg *config.Config) map[string]string {
	out := map[string]string{}
	for _, u := range cfg.Submission.Users {
		if u.Pool != "" {
			out[u.Name] = u.Pool
		}
	}
	return out
}

// submitSettings: the submission section, the host name it greets with,
// the data directory its generated certificate lives in, and for the
// recipient domain check bounces.verify_domains, delivery.dns and the
// domains delivery.routes send to a smarthost.
func submitSettings(cfg *config.Config) submit.Settings {
	s := submit.Settings{Hostname: cfg.Hostname, DataDir: cfg.DataDir, Submission: cfg.Submission,
		VerifyDomains: cfg.Bounces.VerifyDomains, DNS: cfg.Delivery.DNS}
	for _, r := range cfg.Delivery.Routes {
		s.Routed = append(s.Routed, r.Domains...)
	}
	return s
}

// bounceSettings: the bounces section, plus the retry.max_age DSNs quote
// and the message size the intake must take.
func bounceSettings(cfg *config.Config) bounce.Settings {
	return bounce.Settings{
		Bounces:         cfg.Bounces,
		Hostname:        cfg.Hostname,
		From:            cfg.BouncesFrom(),
		DataDir:         cfg.DataDir,
		MaxAge:          cfg.Delivery.Retry.MaxAge.D(),
		MaxMessageBytes: int64(cfg.Submission.MaxMessageBytes),
	}
}

// eventStreamOptions: the events section and the queue's replicas.
func eventStreamOptions(cfg *config.Config) events.StreamOptions {
	return events.StreamOptions{MaxAge: cfg.Events.MaxAge.D(), MaxBytes: int64(cfg.Events.MaxBytes),
		Replicas: cfg.NATS.Replicas}
}

// queueOptions: the nats section and the data directory, with the route
// secret read from nats.cluster.password_file.
func queueOptions(cfg *config.Config, log zerolog.Logger) (queue.Options, error) {
	syncEvery, _ := cfg.SyncInterval()
	o := queue.Options{
		DataDir: cfg.DataDir, URL: cfg.NATS.URL, Listen: cfg.NATS.Listen,
		Credentials: cfg.NATS.Credentials, User: cfg.NATS.User, PasswordFile: cfg.NATS.PasswordFile,
		Replicas: cfg.NATS.Replicas, SyncInterval: syncEvery, Logger: log, Name: "jetrelay " + cfg.Hostname,
		ServerName: cfg.NATS.ServerName,
	}
	cl := cfg.NATS.Cluster
	if cl == nil || !cfg.NATS.Embedded() {
		return o, nil
	}
	pass, err := queue.ReadRouteSecret(cl.PasswordFile)
	if err != nil {
		return o, err
	}
	o.Cluster = &queue.ClusterOptions{
		Name: cl.Name, Listen: cl.Listen, Routes: cl.Routes, Password: pass,
		TLSCert: cl.TLS.Cert, TLSKey: cl.TLS.Key, TLSCAFile: cl.TLS.CAFile,
	}
	return o, nil
}
