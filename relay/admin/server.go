package admin

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/clusterview"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
)

// Queue is what the admin server needs from the queue (*queue.Queue).
type Queue interface {
	// Ping reports whether JetStream answers.
	Ping(ctx context.Context) error
	// Stats samples each state's size and oldest entry.
	Stats(ctx context.Context) (map[queue.State]queue.StateStat, error)
	// JetStream is the relay's account: /readyz asks it whether the queue
	// stream has a leader.
	JetStream() jetstream.JetStream
}

// Options configure New.
type Options struct {
	Listen  string // admin.listen, e.g. 127.0.0.1:8025
	PProf   bool   // admin.pprof: serve /debug/pprof/
	Metrics *Metrics
	Queue   Queue
	// Listening reports whether the submission listeners are open (nil:
	// not checked). Called by /readyz.
	Listening func() error
	// Cluster, when set, adds the cluster gauges to /metrics (cluster.go),
	// taken from this view at scrape time.
	Cluster *clusterview.Options
	// Shaping, when set, adds the per-provider shaping gauges to /metrics
	// (shaping.go), read at scrape time.
	Shaping ShapingStatus
	// Console, when set, is served under /console/ (relay/console).
	Console Console
	// TLS, when set, serves the whole listener over HTTPS (admin.tls).
	TLS *tls.Config
	// SampleEvery is the queue sampling period (default 15s).
	SampleEvery time.Duration
	Logger      zerolog.Logger
}

// Console is the web console (*console.Console).
type Console interface {
	// Handler serves the paths under /console/.
	Handler() http.Handler
	// Shutdown ends the console's long-lived responses (live streams).
	Shutdown()
}

// Defaults.
const (
	defaultSample = 15 * time.Second
	checkTimeout  = 2 * time.Second
	readTimeout   = 10 * time.Second
)

// Server is the admin HTTP endpoint and the queue sampler.
type Server struct {
	o    Options
	log  zerolog.Logger
	http *http.Server
	ln   net.Listener
	stop context.CancelFunc
	wg   sync.WaitGroup
}

// New builds the server; Start listens.
func New(o Options) (*Server, error) {
	if o.Metrics == nil || o.Queue == nil {
		return nil, errors.New("admin: Metrics and Queue are required")
	}
	if o.SampleEvery <= 0 {
		o.SampleEvery = defaultSample
	}
	if o.Cluster != nil {
		if err := o.Metrics.Registry().Register(newClusterCollector(*o.Cluster)); err != nil {
			return nil, fmt.Errorf("admin: cluster metrics: %w", err)
		}
	}
	if js := o.Queue.JetStream(); js != nil {
		if err := o.Metrics.Registry().Register(newBacklogCollector(js)); err != nil {
			return nil, fmt.Errorf("admin: events backlog metrics: %w", err)
		}
	}
	if o.Shaping != nil {
		if err := o.Metrics.Registry().Register(newShapingCollector(o.Shaping)); err != nil {
			return nil, fmt.Errorf("admin: shaping metrics: %w", err)
		}
	}
	s := &Server{o: o, log: o.Logger}
	s.http = &http.Server{Handler: s.Handler(), ReadHeaderTimeout: readTimeout, ReadTimeout: readTimeout}
	return s, nil
}

// Handler returns the endpoint's routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	reg := s.o.Metrics.Registry()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg, Timeout: readTimeout}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	if s.o.Console != nil {
		h := s.o.Console.Handler()
		mux.Handle("/console/", h)
		mux.Handle("/console", h)
	}
	if s.o.PProf {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// readyz answers 200 when JetStream answers, the queue stream has a
// leader and the listeners are open, else 503 with the reasons. Account
// info alone is not enough: it is answered by the JetStream meta leader,
// which says nothing of the queue stream's own replica group; with two of
// three nodes gone, account info still answered for 20 s while the queue
// stream had no leader (TestReadyzQuorumLoss).
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), checkTimeout)
	defer cancel()
	var pingErr, leaderErr error
	var wg sync.WaitGroup
	wg.Go(func() { pingErr = s.o.Queue.Ping(ctx) })
	wg.Go(func() { leaderErr = clusterview.QueueReady(ctx, s.o.Queue.JetStream(), queue.StreamName) })
	wg.Wait()
	var problems []string
	for _, err := range []error{pingErr, leaderErr} {
		if err != nil {
			problems = append(problems, "jetstream: "+err.Error())
		}
	}
	if s.o.Listening != nil {
		if err := s.o.Listening(); err != nil {
			problems = append(problems, "listeners: "+err.Error())
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if len(problems) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = fmt.Fprintln(w, "not ready: "+strings.Join(problems, "; "))
		return
	}
	_, _ = fmt.Fprintln(w, "ready")
}

// Start listens on Options.Listen and starts serving and sampling.
func (s *Server) Start() error {
	ln, err := net.Listen("tcp", s.o.Listen)
	if err != nil {
		return fmt.Errorf("admin.listen %s: %w", s.o.Listen, err)
	}
	if s.o.TLS != nil {
		ln = tls.NewListener(ln, s.o.TLS)
	}
	s.ln = ln
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error().Err(err).Str("event", "admin_stopped").Msg("admin endpoint stopped")
		}
	}()
	go func() {
		defer s.wg.Done()
		s.sample(ctx)
	}()
	return nil
}

// Addr is the listening address (after Start).
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Shutdown stops sampling and the HTTP server (waiting up to ctx for
// requests in progress).
func (s *Server) Shutdown(ctx context.Context) error {
	if s.stop == nil {
		return nil
	}
	s.stop()
	if s.o.Console != nil {
		s.o.Console.Shutdown()
	}
	err := s.http.Shutdown(ctx)
	s.wg.Wait()
	return err
}

// sample records queue statistics every SampleEvery until ctx ends. A
// failing sample keeps the previous values and is logged once per streak.
func (s *Server) sample(ctx context.Context) {
	t := time.NewTicker(s.o.SampleEvery)
	defer t.Stop()
	failing := false
	for {
		sctx, cancel := context.WithTimeout(ctx, checkTimeout)
		stats, err := s.o.Queue.Stats(sctx)
		cancel()
		switch {
		case err == nil:
			s.o.Metrics.SetQueueStats(stats, time.Now())
			failing = false
		case ctx.Err() == nil && !failing:
			s.log.Warn().Err(err).Str("event", "queue_sample_failed").Msg("queue metrics not updated")
			failing = true
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
