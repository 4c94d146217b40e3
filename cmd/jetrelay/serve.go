package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/admin"
	"github.com/jetrelay/jetrelay/relay/bounce"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/console"
	"github.com/jetrelay/jetrelay/relay/deliver"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/msgindex"
	"github.com/jetrelay/jetrelay/relay/mtasts"
	"github.com/jetrelay/jetrelay/relay/shaping"
	"github.com/jetrelay/jetrelay/relay/submit"
	"github.com/jetrelay/jetrelay/relay/webhooks"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

const serveAbout = `Runs the relay: submission listeners, the JetStream queue and the delivery
workers. Without --config it runs the embedded default: listeners on
127.0.0.1:587 (STARTTLS), 127.0.0.1:465 (implicit TLS) and 127.0.0.1:2525
(STARTTLS), an embedded NATS JetStream server storing under ./data (client port
127.0.0.1:4222, user "jetrelay", password in ./data/nats.password), a
self-signed certificate generated once under ./data/tls, and a dev user whose
password is generated and printed once at first start (kept in
./data/dev.password). SIGTERM/SIGINT shut down gracefully; SIGHUP reloads the
config file.`

func runServe(args []string, sio stdio) int {
	fs := newFlags("serve", "serve [--config FILE]", serveAbout, sio)
	path := fs.String("config", "", "config file (default: the built-in loopback default)")
	if rc, ok := parseFlags(fs, args); !ok {
		return rc
	}
	cfg, err := loadServeConfig(*path)
	if err != nil {
		for _, line := range splitErrors(err) {
			fmt.Fprintf(sio.err, "jetrelay serve: %s\n", line)
		}
		return 1
	}
	log := newLogger(cfg, sio)
	for _, w := range cfg.Warnings() {
		log.Warn().Str("event", "config_warning").Str("path", w.Path).Int("line", w.Line).Msg(w.Msg)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := serve(ctx, cfg, log, sio); err != nil {
		log.Error().Err(err).Str("event", "fatal").Msg("jetrelay stopped")
		fmt.Fprintf(sio.err, "jetrelay serve: %v\n", err)
		return 1
	}
	return 0
}

func loadServeConfig(path string) (*config.Config, error) {
	if path != "" {
		return config.Load(path)
	}
	cfg := config.Default()
	return cfg, cfg.Validate()
}

func newLogger(cfg *config.Config, sio stdio) zerolog.Logger {
	lvl, err := zerolog.ParseLevel(cfg.Log.Level)
	if err != nil {
		lvl = zerolog.InfoLevel
	}
	w := sio.out
	if cfg.Log.Format == "console" {
		w = zerolog.ConsoleWriter{Out: sio.out, TimeFormat: time.RFC3339}
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger()
}

// relay is the running set of components.
type relay struct {
	cfg      *config.Config
	log      zerolog.Logger
	q        *queue.Queue
	metrics  *admin.Metrics
	evPub    *events.StreamPublisher
	msgIndex *msgindex.Index // the console's message search (msgindexwire.go)
	stopIdx  func()          // stops this node's indexer (msgindexwire.go)
	emitter  *events.Emitter
	bouncer  *bounce.Bouncer
	stsKV    jetstream.KeyValue // MTA-STS policy cache (relay/mtasts)
	sub      *submit.Server
	eng      *deliver.Engine
	adm      *admin.Server
	stopping atomic.Bool

	stats  *statsWire // the counts and the bounce-rate guard (statswire.go)
	shaper *shaping.Shaper
	tlsrpt *tlsrptRun // TLS-RPT counter and reporter (tlsrptwire.go)
	// shapingSet is the shaping in effect, for the /metrics gauges.
	shapingSet atomic.Pointer[shaping.Settings]

	webhooks *webhooks.Manager // webhookwire.go
	console  *console.Console  // the web console, nil when off (consolewire.go)
}

func serve(ctx context.Context, cfg *config.Config, log zerolog.Logger, sio stdio) error {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data_dir: %w", err)
	}
	applyMemoryLimit(cfg)
	applyGCPercent(cfg)
	if cfg.Dev {
		if err := addDevUser(cfg, sio); err != nil {
			return err
		}
	}
	qo, err := queueOptions(cfg, log)
	if err != nil {
		return err
	}
	q, err := queue.Open(ctx, qo)
	if err != nil {
		return startErr(ctx, log, err)
	}
	r := &relay{cfg: cfg, log: log, q: q, metrics: admin.NewMetrics()}
	defer r.close()
	if err := r.start(ctx); err != nil {
		return startErr(ctx, log, err)
	}
	logStart(cfg, log, q, r.sub)
	logSourceProblems(cfg, log)
	engDone := make(chan error, 1)
	engCtx, engCancel := context.WithCancel(context.Background())
	defer engCancel()
	go func() { engDone <- r.eng.Run(engCtx) }()

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-hup:
			r.reload()
		case err := <-engDone:
			_ = r.sub.Shutdown(context.Background())
			return fmt.Errorf("delivery stopped: %w", err)
		case <-ctx.Done():
			return r.shutdown(engCancel, engDone)
		}
	}
}

// startErr is a start-up error, or nil when the serve context ended
// (SIGTERM) while start-up waited for JetStream: a clean stop.
func startErr(ctx context.Context, log zerolog.Logger, err error) error {
	if ctx.Err() == nil {
		return err
	}
	log.Info().Str("event", "stopped").Str("waiting_for", err.Error()).
		Msg("jetrelay stopped before JetStream was ready")
	return nil
}

// start builds every component; what it started is stopped by close.
func (r *relay) start(ctx context.Context) error {
	brake, err := r.startState(ctx)
	if err != nil {
		return err
	}
	if err := r.openShaper(ctx); err != nil {
		return fmt.Errorf("shaping: %w", err)
	}
	signer, err := newDKIMSigner(r.cfg)
	if err != nil {
		return fmt.Errorf("dkim: %w", err)
	}
	var rates *submit.Rates
	err = r.q.Await(ctx, "bucket "+submit.RateBucket, func(ctx context.Context) error {
		var err error
		rates, err = submit.OpenRates(ctx, submit.RateOptions{JetStream: r.q.JetStream(), Replicas: r.q.Replicas(),
			Logger: r.log})
		return err
	})
	if err != nil {
		return err
	}
	r.sub, err = submit.New(submit.Options{
		Settings: submitSettings(r.cfg), Queue: r.q, Signer: signer, Suppressor: r.bouncer,
		Events: r.emitter, Logger: r.log, // TLS from Settings: reloaded on SIGHUP
		Observer: r.metrics, Conns: r.metrics.Connections(admin.Inbound), Brake: brake, Rates: rates,
	})
	if err != nil {
		return err
	}
	var _ deliver.Reporter = r.bouncer // bounce implements it without importing deliver
	r.eng, err = deliver.New(deliver.Options{
		Settings: deliverSettings(r.cfg), Queue: r.q, Events: r.emitter, Logger: r.log, Reporter: r.bouncer,
		// VERP senders only take effect with bounces.verp_domain set (Settings.VERP).
		Sender: r.bouncer.VERPAddress, Conns: r.metrics.Connections(admin.Outbound), Shaper: r.shaper,
		MTASTS: r.stsKV,
	})
	if err != nil {
		return err
	}
	if err := r.startTLSRPT(ctx, signer); err != nil {
		return err
	}
	if err := r.startStats(ctx); err != nil {
		return err
	}
	if err := r.sub.Start(); err != nil {
		return err
	}
	if r.cfg.Bounces.Listen != "" {
		if err := r.bouncer.StartIntake(); err != nil {
			return err
		}
	}
	if err := r.startWebhooks(ctx); err != nil {
		return fmt.Errorf("webhooks: %w", err)
	}
	return r.startAdmin(ctx)
}

// startState opens the components' streams and buckets (events, bounce
// state and suppression list, auth brake), each waiting while JetStream is
// not ready (queue.Await), as a cluster node that starts first must.
func (r *relay) startState(ctx context.Context) (*submit.Brake, error) {
	var err error
	r.evPub, err = events.NewPublisher(events.PublisherOptions{
		Conn: r.q.Conn(), Logger: r.log, OnDrop: r.metrics.EventDropped, Stream: eventStreamOptions(r.cfg),
	})
	if err != nil {
		return nil, err
	}
	// Start ensures the stream itself: under Await, so that a cluster
	// whose meta leader changes while the node starts (an election after
	// the first streams were placed) is waited for, not a failed start.
	// A failed Start has started nothing and may be called again.
	if err := r.q.Await(ctx, "stream "+events.StreamName, r.evPub.Start); err != nil {
		return nil, fmt.Errorf("events stream: %w", err)
	}
	r.emitter = events.NewEmitter(r.log, events.Tee(r.metrics, r.evPub))
	if err := r.startMsgIndex(ctx); err != nil {
		return nil, err
	}
	err = r.q.Await(ctx, "bounce buckets", func(ctx context.Context) error {
		var err error
		r.bouncer, err = bounce.New(ctx, bounce.Options{Settings: bounceSettings(r.cfg), Queue: r.q,
			Events: r.emitter, Logger: r.log})
		return err
	})
	if err != nil {
		return nil, err
	}
	var brake *submit.Brake
	err = r.q.Await(ctx, "bucket "+submit.AuthBucket, func(ctx context.Context) error {
		var err error
		brake, err = submit.OpenBrake(ctx, submit.BrakeOptions{JetStream: r.q.JetStream(), Replicas: r.q.Replicas()})
		return err
	})
	if err != nil {
		return nil, err
	}
	// Opened even while delivery.mta_sts is off, so a reload can turn it on.
	err = r.q.Await(ctx, "bucket "+mtasts.Bucket, func(ctx context.Context) error {
		var err error
		r.stsKV, err = mtasts.OpenBucket(ctx, r.q.JetStream(), r.q.Replicas())
		return err
	})
	return brake, err
}

func (r *relay) startAdmin(ctx context.Context) error {
	if r.cfg.Admin.Listen == "" {
		return nil
	}
	con, tlsCfg, err := r.openConsole(ctx) // consolewire.go
	if err != nil {
		return err
	}
	r.adm, err = admin.New(admin.Options{Console: con, TLS: tlsCfg,
		Listen: r.cfg.Admin.Listen, PProf: r.cfg.Admin.PProf, Metrics: r.metrics, Queue: r.q, Logger: r.log,
		Cluster: r.clusterView(), Shaping: r.shapingStatus,
		Listening: func() error {
			if r.stopping.Load() || len(r.sub.Addrs()) == 0 {
				return errors.New("submission listeners closed")
			}
			return nil
		},
	})
	if err != nil {
		return err
	}
	return r.adm.Start()
}

// close stops what start started, in reverse order, NATS last.
func (r *relay) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if r.adm != nil {
		_ = r.adm.Shutdown(ctx)
	}
	if r.bouncer != nil && r.cfg.Bounces.Listen != "" {
		_ = r.bouncer.Shutdown(ctx)
	}
	r.tlsrpt.stop()
	r.stopStats() // before the events publisher: the guard emits through it
	if r.shaper != nil {
		r.shaper.Close()
	}
	r.closeWebhooks()
	r.stopMsgIndex()
	if r.evPub != nil {
		_ = r.evPub.Close(ctx)
	}
	r.q.Close()
}

// shutdown follows STYLE.md's order: listeners, then delivery (grace), then NATS.
func (r *relay) shutdown(engCancel context.CancelFunc, engDone <-chan error) error {
	r.stopping.Store(true)
	r.log.Info().Str("event", "shutdown").Msg("stopping: listeners first, then delivery")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.sub.Shutdown(ctx); err != nil {
		r.log.Warn().Err(err).Msg("submission shutdown")
	}
	engCancel()
	grace := r.cfg.Delivery.ShutdownGrace.D() + 10*time.Second
	select {
	case err := <-engDone:
		if err != nil && !errors.Is(err, context.Canceled) {
			r.log.Warn().Err(err).Msg("delivery shutdown")
		}
	case <-time.After(grace):
		r.log.Warn().Msg("delivery did not stop within shutdown_grace; unfinished entries are redelivered later")
	}
	r.log.Info().Str("event", "stopped").Msg("jetrelay stopped")
	return nil
}

func logStart(cfg *config.Config, log zerolog.Logger, q *queue.Queue, sub *submit.Server) {
	limit, from := memoryLimit()
	pace, paceFrom := gcPercent()
	ev := log.Info().Str("event", "started").Str("version", versionString()).Str("crypto", cryptoBackend).
		Str("hostname", cfg.Hostname).Str("data_dir", cfg.DataDir).Int64("memory_limit", limit).Str("memory_limit_from", from).
		Int("gc_percent", pace).Str("gc_percent_from", paceFrom)
	addrs := []string{}
	for _, a := range sub.Addrs() {
		addrs = append(addrs, a.String())
	}
	ev = ev.Strs("submission", addrs).Int("users", len(cfg.Submission.Users))
	if cfg.NATS.Embedded() {
		ev = ev.Str("nats", "embedded").Str("nats_listen", q.ClientURL()).Str("nats_sync", cfg.NATS.Sync).
			Str("nats_server_name", cfg.NATS.ServerName)
		if cl := cfg.NATS.Cluster; cl != nil {
			ev = ev.Str("nats_cluster", cl.Name).Str("nats_cluster_listen", cl.Listen).Int("nats_replicas", cfg.NATS.Replicas)
		}
	} else {
		ev = ev.Str("nats", queue.RedactURL(cfg.NATS.URL))
	}
	ev.Str("tls_policy", cfg.Delivery.TLS.Default).Int("routes", len(cfg.Delivery.Routes)).
		Int("shaping_providers", len(cfg.Delivery.Shaping.AllProviders())).Int("sources", len(cfg.Delivery.Sources)).
		Int("dkim_keys", len(cfg.DKIM.Keys)).Msg("jetrelay running")
}
