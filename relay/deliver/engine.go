package deliver

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Reporter receives final and notable outcomes; relay/bounce implements it
// (DSNs, suppression). It is called before the entry is acknowledged; an
// error keeps the affected recipients queued (they are tried again later),
// so implementations must be idempotent.
type Reporter interface {
	// Failed: permanent failures, or recipients that reached retry.max_age
	// (with their last temporary reply).
	Failed(ctx context.Context, env *queue.Envelope, body []byte, failed []Result) error
	// Relayed: NOTIFY=SUCCESS recipients handed to a next hop that does not
	// offer DSN (RFC 3461 §6.2.2.2 "relayed").
	Relayed(ctx context.Context, env *queue.Envelope, body []byte, relayed []Result) error
	// Delayed: recipients still deferred after bounces.delay_notice_after
	// (once per entry); for delay notices.
	Delayed(ctx context.Context, env *queue.Envelope, body []byte, delayed []Result) error
}

// Result is one recipient's outcome of one attempt.
type Result struct {
	Rcpt      queue.Recipient
	Status    string // events.StatusDelivered | StatusDeferred | StatusFailed
	Code      int
	Enh       string
	Reply     string
	MX        string
	IP        string
	Time      time.Time
	Temporary bool // the (last) reply was temporary: a max_age expiry when Status is failed
}

// Options are the engine's dependencies.
type Options struct {
	Config   *config.Config
	Queue    *queue.Queue
	Events   *events.Emitter
	Logger   zerolog.Logger
	Reporter Reporter // nil: failures are only logged
	Resolver Resolver // nil: miekg/dns against delivery.dns.servers or /etc/resolv.conf
	Dialer   Dialer   // nil: net.Dialer bound to delivery.source_ip
	// Sender, when set, gives the envelope sender to use on the wire for
	// one recipient (relay/bounce's VERPSender). It is used only when
	// bounces.verp_domain is set and the entry has a non-null sender;
	// each recipient then gets its own transaction. nil: env.From.
	Sender func(env *queue.Envelope, rcpt string) string
	// Conns counts open outbound SMTP connections (nil: not counted);
	// a prometheus.Gauge fits.
	Conns Gauge
}

// Gauge counts open outbound connections: Inc once a TCP connection is
// established, Dec once when it is closed, whatever path closes it.
// Implementations must be safe for concurrent use.
type Gauge interface {
	Inc()
	Dec()
}

// Engine is the delivery engine: it leases entries from the queue and
// delivers them. Run it once.
type Engine struct {
	log    zerolog.Logger
	q      *queue.Queue
	ev     *events.Emitter
	rep    Reporter
	res    Resolver
	dialer Dialer
	sender func(env *queue.Envelope, rcpt string) string
	conns  Gauge
	rt     atomic.Pointer[runtime]
	pace   *pacer // spreads the retries of failing destinations (pace.go)
	warn   *warnOnce

	sched     scheduler
	leases    leases
	finishing chan *finishJob // results of attempts
	deferring chan *finishJob // entries deferred without connecting
	finishWG  sync.WaitGroup
	wakes     sync.WaitGroup // wake-up handlers of parked domains (park.go)
	unparkMu  sync.Mutex
	unparking map[string]time.Time // domain -> when its unparking was asked for
}

// runtime is the reloadable part of the configuration, parsed once.
type runtime struct {
	cfg      *config.Config
	routes   []*routeTransport
	matchers []map[string]bool // per route: domains ("*" = all)
	policies map[string]string
	roots    *x509.CertPool
	to       timeouts
	schedule []time.Duration
}

// New checks the configuration and builds an engine.
func New(o Options) (*Engine, error) {
	if o.Config == nil || o.Queue == nil {
		return nil, errors.New("deliver: Config and Queue are required")
	}
	if o.Events == nil {
		o.Events = events.NewEmitter(o.Logger, nil)
	}
	e := &Engine{log: o.Logger, q: o.Queue, ev: o.Events, rep: o.Reporter, dialer: o.Dialer,
		sender: o.Sender, conns: o.Conns, warn: &warnOnce{log: o.Logger}}
	res := o.Resolver
	if res == nil {
		r, err := NewResolver(DNSOptions{Servers: o.Config.Delivery.DNS.Servers, Timeout: o.Config.Delivery.DNS.Timeout.D()})
		if err != nil {
			return nil, err
		}
		res = r
	}
	e.res = newCachingResolver(res)
	if e.dialer == nil {
		d := &net.Dialer{KeepAlive: 30 * time.Second}
		if ip := o.Config.Delivery.SourceIP; ip != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(ip)}
		}
		e.dialer = d
	}
	e.pace = newPacer(o.Config.Delivery.Retry.Pace)
	if err := e.Reload(o.Config); err != nil {
		return nil, err
	}
	e.sched.init()
	e.leases.m = map[*queue.Entry]time.Time{}
	e.unparking = map[string]time.Time{}
	return e, nil
}

// Reload swaps routes, TLS policies, limits, timeouts and the retry schedule
// atomically; entries already being delivered finish under the old ones.
func (e *Engine) Reload(cfg *config.Config) error {
	rt, err := e.buildRuntime(cfg)
	if err != nil {
		return err
	}
	e.rt.Store(rt)
	if e.pace != nil {
		e.pace.setRate(cfg.Delivery.Retry.Pace)
	}
	return nil
}

func (e *Engine) buildRuntime(cfg *config.Config) (*runtime, error) {
	d := cfg.Delivery
	rt := &runtime{cfg: cfg, policies: map[string]string{}}
	for dom, p := range d.TLS.Domains {
		rt.policies[strings.ToLower(dom)] = p
	}
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	if d.TLS.CAFile != "" {
		pem, err := os.ReadFile(d.TLS.CAFile)
		if err != nil {
			return nil, fmt.Errorf("deliver: delivery.tls.ca_file: %w", err)
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("deliver: delivery.tls.ca_file %s: no PEM certificates", d.TLS.CAFile)
		}
	}
	rt.roots = roots
	var errs []error
	for i, r := range d.Routes {
		t, m, err := e.buildRoute(i, r)
		errs = append(errs, err)
		rt.routes, rt.matchers = append(rt.routes, t), append(rt.matchers, m)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	t := d.Timeouts
	rt.to = timeouts{connect: t.Connect.D(), greeting: t.Greeting.D(), mail: t.Mail.D(), rcpt: t.Rcpt.D(),
		dataInit: t.DataInit.D(), dataBlock: t.DataBlock.D(), dataFinal: t.DataFinal.D(), idle: t.Idle.D()}
	for _, s := range d.Retry.Schedule {
		rt.schedule = append(rt.schedule, s.D())
	}
	if len(rt.schedule) == 0 {
		rt.schedule = []time.Duration{time.Minute}
	}
	return rt, nil
}

func (e *Engine) buildRoute(i int, r config.Route) (*routeTransport, map[string]bool, error) {
	host, port := splitHostPort(r.Host)
	plan := Plan{TLS: r.TLS, RequireTLS: r.TLS != "none", Verify: r.TLS != "none" && r.Verify(), ServerName: host}
	if r.Auth != nil {
		pass, ok := os.LookupEnv(r.Auth.PasswordEnv)
		if !ok {
			return nil, nil, fmt.Errorf("deliver: delivery.routes[%d].auth.password_env: %s is not set", i, r.Auth.PasswordEnv)
		}
		plan.User, plan.Pass = r.Auth.User, pass
	}
	m := map[string]bool{}
	for _, dom := range r.Domains {
		m[strings.ToLower(dom)] = true
	}
	key := fmt.Sprintf("route:%d:%s:%s:%v", i, r.Host, r.TLS, plan.Verify)
	return &routeTransport{key: key, host: host, port: port, plan: plan, res: e.res}, m, nil
}

// transport picks the route for env's domain (first match wins, "*" = all)
// or MX delivery with the domain's TLS policy. REQUIRETLS messages always
// need a verified certificate (RFC 8689 §4.2.1).
func (e *Engine) transport(env *queue.Envelope) Transport {
	rt := e.rt.Load()
	dom := strings.ToLower(env.Domain)
	for i, m := range rt.matchers {
		if m["*"] || m[dom] {
			return rt.routes[i]
		}
	}
	pol := rt.policies[dom]
	if pol == "" {
		pol = rt.cfg.Delivery.TLS.Default
	}
	if env.RequireTLS {
		pol = "verify"
	}
	return &mxTransport{domain: dom, plan: planFor(pol), port: rt.cfg.Delivery.Port, res: e.res, warn: e.warn}
}

// planFor maps a delivery.tls policy to a dial plan.
func planFor(policy string) Plan {
	switch policy {
	case "none":
		return Plan{TLS: "none"}
	case "required":
		return Plan{TLS: "starttls", RequireTLS: true}
	case "verify":
		return Plan{TLS: "starttls", RequireTLS: true, Verify: true}
	default: // opportunistic (RFC 7435)
		return Plan{TLS: "starttls", PlainFallback: true}
	}
}

// Run leases entries and delivers them until ctx is cancelled; then it
// stops fetching, lets in-flight deliveries finish for up to
// delivery.shutdown_grace, releases everything else and returns.
func (e *Engine) Run(ctx context.Context) error {
	cfg := e.rt.Load().cfg
	prefetch := min(max(256, 4*cfg.Delivery.MaxConnections), 2048)
	es, err := e.q.Lease(ctx, prefetch)
	if err != nil {
		return fmt.Errorf("deliver: lease: %w", err)
	}
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	e.sched.ctx = workCtx
	e.startFinishers()
	bg, cancelBG := context.WithCancel(context.Background())
	hkDone := make(chan struct{})
	go func() { defer close(hkDone); e.housekeeping(bg) }()
	stopBG := func() { cancelBG(); <-hkDone }
	stopFetch := context.AfterFunc(ctx, es.Drain)
	defer stopFetch()
	e.log.Info().Str("event", "delivery_started").Int("prefetch", prefetch).
		Int("max_connections", cfg.Delivery.MaxConnections).Msg("delivery workers running")
	for {
		en, err := es.Next()
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			break
		}
		if err != nil {
			e.log.Warn().Err(err).Str("event", "lease_error").Msg("fetching queue entries")
			if ctx.Err() != nil {
				es.Stop()
			}
			continue
		}
		if ctx.Err() != nil {
			_ = en.Nak()
			continue
		}
		if en.Wake != nil {
			e.wakes.Add(1)
			go func() { defer e.wakes.Done(); e.handleWake(en) }()
			continue
		}
		e.dispatch(ctx, en)
	}
	e.shutdown(cancelWork, stopBG)
	return nil
}

// shutdown releases queued entries, gives in-flight deliveries the grace
// period, then cancels them (their entries are released) and waits.
func (e *Engine) shutdown(cancelWork context.CancelFunc, stopHousekeeping func()) {
	grace := e.rt.Load().cfg.Delivery.ShutdownGrace.D()
	e.log.Info().Str("event", "delivery_stopping").Dur("grace", grace).Msg("stopped fetching; finishing in-flight deliveries")
	e.sched.stop(e)
	done := make(chan struct{})
	go func() { e.sched.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		e.log.Warn().Str("event", "delivery_grace_expired").Msg("cancelling deliveries still in flight; their entries are released")
		cancelWork()
		<-done
	}
	stopHousekeeping()
	e.wakes.Wait()
	close(e.finishing)
	close(e.deferring)
	e.finishWG.Wait()
	e.log.Info().Str("event", "delivery_stopped").Msg("delivery stopped")
}
