package deliver

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/outcome"
	"github.com/jetrelay/jetrelay/relay/shaping"
	"github.com/jetrelay/jetrelay/relay/smtpclient"
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
	Failed(ctx context.Context, env *queue.Envelope, body []byte, failed []outcome.Result) error
	// Relayed: NOTIFY=SUCCESS recipients handed to a next hop that does not
	// offer DSN (RFC 3461 §6.2.2.2 "relayed").
	Relayed(ctx context.Context, env *queue.Envelope, body []byte, relayed []outcome.Result) error
	// Delayed: recipients still deferred after bounces.delay_notice_after
	// (once per entry); for delay notices.
	Delayed(ctx context.Context, env *queue.Envelope, body []byte, delayed []outcome.Result) error
}

// Settings are what the engine reads from the configuration: its own
// section plus the few values it needs from elsewhere, named. cmd builds
// them; Prepare swaps them on reload.
type Settings struct {
	config.Delivery
	// Hostname is the EHLO name (hostname).
	Hostname string
	// VERP gives each recipient of an entry with a non-null sender its own
	// transaction, with Options.Sender's envelope sender (bounces.verp_domain
	// is set).
	VERP bool
	// DelayNoticeAfter is bounces.delay_notice_after: recipients still
	// deferred this long after arrival are reported to Reporter.Delayed
	// (0: never).
	DelayNoticeAfter time.Duration
	// Sources are the egress addresses (delivery.sources), Pools lists of
	// their names (delivery.pools) and UserPools each submission user's
	// pool (submission.users[].pool); see source.go. Empty: no source,
	// the system's choice of address (delivery.source_ip).
	Sources   []Source
	Pools     map[string][]string
	UserPools map[string]string
}

// Options are the engine's dependencies.
type Options struct {
	Settings Settings
	Queue    *queue.Queue
	Events   *events.Emitter
	Logger   zerolog.Logger
	Reporter Reporter // nil: failures are only logged
	// Resolver answers DNS questions. nil: miekg/dns against
	// delivery.dns.servers or /etc/resolv.conf, rebuilt by Prepare.
	Resolver smtpclient.Resolver
	// Dialer opens connections to smarthost routes, and to MX hosts when
	// MXDialer is nil. nil: net.Dialer bound to delivery.source_ip,
	// rebuilt by Prepare.
	Dialer smtpclient.Dialer
	// MXDialer opens connections to MX hosts (the ones a recipient domain
	// chooses): the place for the denied-networks guard. nil: Dialer.
	MXDialer smtpclient.Dialer
	// Policies gives MX TLS policies; nil: delivery.tls from Settings.
	Policies smtpclient.PolicyStore
	// Sender, when set, gives the envelope sender to use on the wire for
	// one recipient (relay/bounce's VERPAddress); an error is logged and
	// the plain sender used. It is used only when
	// Settings.VERP is set and the entry has a non-null sender;
	// each recipient then gets its own transaction. nil: env.From.
	Sender func(ctx context.Context, env *queue.Envelope, rcpt string) (string, error)
	// Conns counts open outbound SMTP connections (nil: not counted);
	// a prometheus.Gauge fits.
	Conns smtpclient.Gauge
	// MTASTS is the MTA-STS policy cache (relay/mtasts.OpenBucket; nil:
	// MTA-STS off), used while delivery.mta_sts.enabled.
	MTASTS jetstream.KeyValue
	// Shaper shapes traffic per provider (relay/shaping; shape.go). nil:
	// no shaping, only delivery.max_per_destination per destination.
	Shaper *shaping.Shaper
}

// Engine is the delivery engine: it leases entries from the queue and
// hands them to the scheduler. Run it once. The work is split between
// types that each own their state: scheduler (destinations, workers,
// breaker; sched.go), attempter (one attempt; attempt.go), finisher
// (settling results; finish.go), parker (parked domains; park.go), pacer
// (retry pacing; pace.go) and leases (heartbeats; lease.go).
type Engine struct {
	log   zerolog.Logger
	q     *queue.Queue
	rt    *atomic.Pointer[runtime]
	pace  *pacer
	sched *scheduler
	lease *leases
	fin   *finisher
	park  *parker
	build runtimeBuilder
}

// New checks the settings and builds an engine.
func New(o Options) (*Engine, error) {
	if o.Queue == nil {
		return nil, errors.New("deliver: Queue is required")
	}
	if o.Events == nil {
		o.Events = events.NewEmitter(o.Logger, nil)
	}
	e := &Engine{log: o.Logger, q: o.Queue, rt: &atomic.Pointer[runtime]{}, build: newRuntimeBuilder(o),
		pace: newPacer(o.Settings.Retry.Pace), lease: newLeases()}
	apply, err := e.Prepare(o.Settings)
	if err != nil {
		return nil, err
	}
	apply()
	e.park = newParker(o.Logger, o.Queue, e.rt)
	e.fin = &finisher{log: o.Logger, rt: e.rt, ev: o.Events, rep: o.Reporter, pace: e.pace, park: e.park, leases: e.lease}
	att := &attempter{log: o.Logger, rt: e.rt, leases: e.lease, fin: e.fin, sender: o.Sender}
	e.sched = newScheduler(o.Logger, e.rt, e.fin, att)
	e.sched.shaper = o.Shaper
	return e, nil
}

// defaultDialer is a net.Dialer bound to delivery.source_ip.
func defaultDialer(sourceIP string) *net.Dialer {
	d := &net.Dialer{KeepAlive: 30 * time.Second}
	if sourceIP != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(sourceIP)}
	}
	return d
}

// Prepare is the first half of a reload: it checks s and builds everything
// that can fail (CA file, resolver, network guard, routes and their
// credentials) without changing anything. apply, which cannot fail, then
// swaps the new settings in at once: routes, TLS policies, DNS servers,
// port, source address, limits, timeouts, the retry schedule and pace.
// Entries already being delivered finish under the settings they started
// with. An unused apply is simply dropped.
func (e *Engine) Prepare(s Settings) (apply func(), err error) {
	rt, err := e.build.runtime(s, e.rt.Load())
	if err != nil {
		return nil, err
	}
	return func() {
		e.rt.Store(rt)
		e.pace.setRate(s.Retry.Pace)
	}, nil
}

// Prefetch bounds (see prefetch).
const (
	prefetchPerConnection = 2
	minPrefetch           = 32
	maxPrefetch           = 2048
)

// prefetch is how many entries the engine lets the lease iterator pull
// ahead of the dispatcher: what the workers (delivery.max_connections)
// take within a moment, twice over, so that a node holds little its
// workers cannot start on soon. Entries pulled ahead are leased to this
// node: another node gets them only after AckWait if this one dies.
func prefetch(set Settings) int {
	return min(max(minPrefetch, prefetchPerConnection*set.MaxConnections), maxPrefetch)
}

// Run leases entries and delivers them until ctx is cancelled; then it
// stops fetching, lets in-flight deliveries finish for up to
// delivery.shutdown_grace, releases everything else and returns. While
// JetStream is unavailable (no quorum, a restart) delivery pauses and
// resumes by itself when it is back (pull, lease.go).
func (e *Engine) Run(ctx context.Context) error {
	set := e.rt.Load().set
	n := prefetch(set)
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	e.sched.ctx = workCtx
	e.fin.start()
	bg, cancelBG := context.WithCancel(context.Background())
	var bgDone sync.WaitGroup
	for _, f := range []func(context.Context){e.housekeeping, e.watchRetries} { // retry.go
		bgDone.Add(1)
		go func() { defer bgDone.Done(); f(bg) }()
	}
	stopBG := func() { cancelBG(); bgDone.Wait() }
	// Heartbeats go on until the finishers have settled every entry.
	hb, stopHB := context.WithCancel(context.Background())
	hbDone := make(chan struct{})
	go func() { defer close(hbDone); e.lease.run(hb) }()
	defer func() { stopHB(); <-hbDone }()
	e.log.Info().Str("event", "delivery_started").Int("prefetch", n).
		Int("max_connections", set.MaxConnections).Msg("delivery workers running")
	e.pull(ctx, n)
	e.shutdown(cancelWork, stopBG)
	return nil
}

// pull leases entries and hands them on until ctx ends. An iterator
// outlives JetStream being away (it pulls again when the server answers);
// one that ends otherwise (consumer deleted, a lasting error) is replaced
// after a pause, as is a failed Lease, so delivery never needs a restart.
func (e *Engine) pull(ctx context.Context, prefetch int) {
	var out outage
	delay := leaseRetryMin
	for ctx.Err() == nil {
		es, err := e.q.Lease(ctx, prefetch)
		if err != nil {
			out.failed(e.log, err)
			sleepCtx(ctx, delay)
			delay = min(2*delay, leaseRetryMax)
			continue
		}
		e.lease.setAckWait(es.AckWait())
		stop := context.AfterFunc(ctx, es.Drain)
		if e.fetch(ctx, es, newArrivals(prefetch, time.Now()), &out) {
			delay = leaseRetryMin
		}
		stop()
		if ctx.Err() == nil {
			sleepCtx(ctx, delay)
			delay = min(2*delay, leaseRetryMax)
		}
	}
}

// fetch hands every leased entry on until the iterator ends (drained
// after ctx ended, or a terminal error); it reports whether it handed on
// any. Entries pulled after ctx ended are released at once.
func (e *Engine) fetch(ctx context.Context, es *queue.Entries, arr *arrivals, out *outage) (got bool) {
	for {
		en, err := es.Next()
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			return got
		}
		if err != nil {
			out.failed(e.log, err)
			if ctx.Err() != nil || !errors.Is(err, jetstream.ErrNoHeartbeat) {
				es.Stop() // draining a silent server, or a lasting error: lease anew (pull)
				return got
			}
			continue
		}
		since := arr.next(time.Now())
		if ctx.Err() != nil {
			_ = en.Nak()
			continue
		}
		got = true
		out.resumed(e.log)
		e.take(ctx, en, since)
	}
}

// take dispatches one leased entry whose lease started no earlier than since.
func (e *Engine) take(ctx context.Context, en *queue.Entry, since time.Time) {
	e.lease.add(en, since)
	if en.Wake != nil {
		e.park.wake(en, func() { e.lease.remove(en) })
		return
	}
	if en.Deliveries() > 1 && en.Superseded(ctx) {
		e.lease.remove(en)
		e.log.Info().Str("event", "superseded").Str("queue_id", en.Env.ID).Str("domain", en.Env.Domain).
			Msg("redelivered entry was already rescheduled; acknowledged")
		_ = en.Done(ctx)
		return
	}
	e.sched.dispatch(ctx, en)
}

// shutdown releases queued entries, gives in-flight deliveries the grace
// period, then cancels them (their entries are released) and waits.
func (e *Engine) shutdown(cancelWork context.CancelFunc, stopHousekeeping func()) {
	grace := e.rt.Load().set.ShutdownGrace.D()
	e.log.Info().Str("event", "delivery_stopping").Dur("grace", grace).
		Msg("stopped fetching; finishing in-flight deliveries")
	e.sched.stop()
	done := make(chan struct{})
	go func() { e.sched.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		e.log.Warn().Str("event", "delivery_grace_expired").
			Msg("cancelling deliveries still in flight; their entries are released")
		cancelWork()
		<-done
	}
	e.sched.placing.Wait() // each releases its entry (stopping)
	stopHousekeeping()
	e.park.wait()
	e.fin.stop()
	e.log.Info().Str("event", "delivery_stopped").Msg("delivery stopped")
}

// housekeeping defers entries that waited too long for a connection and
// checks parked domains' wake-ups, once a second until ctx ends.
func (e *Engine) housekeeping(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	nextWakeCheck := time.Now().Add(time.Minute)
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			e.sched.sweep(now)
			e.pace.sweep(now)
			if now.After(nextWakeCheck) {
				cctx, cancel := context.WithTimeout(ctx, ackTimeout)
				e.park.checkWakes(cctx, now)
				cancel()
				nextWakeCheck = now.Add(wakeCheckEvery)
			}
		}
	}
}
