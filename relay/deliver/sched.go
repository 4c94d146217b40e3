package deliver

import (
	"context"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/shaping"
	"github.com/jetrelay/jetrelay/relay/smtpclient"
	"github.com/rs/zerolog"
)

// Scheduling limits (see the package comment, "Head-of-line isolation").
const (
	// destQueueCap bounds the entries waiting in memory for one destination.
	destQueueCap = 1000
	// maxQueueWait is how long an entry may wait for a connection before it
	// is deferred instead.
	maxQueueWait = 30 * time.Second
	// roomWait is how long the dispatcher waits for room in the queue of a
	// destination that is delivering briskly before deferring the entry.
	roomWait = time.Second
	// fastWindow: a destination that finished a transaction this recently
	// and has no connection failures counts as delivering briskly.
	fastWindow = 2 * time.Second
	// maxBreakerOpen caps how long a circuit breaker stays open.
	maxBreakerOpen = 10 * time.Minute
	// keyLookupTimeout bounds the MX lookup that finds an entry's
	// destination; after it the domain's own name is the key.
	keyLookupTimeout = 10 * time.Second
)

// job is one leased entry on its way through a destination.
type job struct {
	en     *queue.Entry
	tr     smtpclient.Transport
	key    string // its destination (smtpclient.Client.Destination)
	queued time.Time
	// class and observe: its destination's shaping class and Observe,
	// as the worker took it (a reload may reclassify the destination).
	class   shaping.Class
	observe func(smtpclient.Reply, bool)
}

// dest is one destination (an MX domain with its TLS plan, or a route)
// for one egress pool: its local queue, its workers, its circuit breaker
// and its shaping wait (shape.go).
type dest struct {
	key     string // poolKey(target, pool)
	target  string // smtpclient.Client.Destination
	pool    string // egress pool ("" = none; source.go)
	class   shaping.Class
	observe func(smtpclient.Reply, bool) // Shaper.Observe for class; nil without a Shaper
	// waitUntil: shaping refused a connection or message; no worker
	// starts before then (or before the class changes; waking).
	waitUntil time.Time
	waitWhy   string   // the queue ls mark: "shaping: connections (google)"
	waking    bool     // a waker goroutine watches the wait
	deferAll  bool     // a suspension or long wait: arrivals are deferred at once
	probing   bool     // refused before: one new worker at a time until one connects
	classRT   *runtime // the runtime class was taken under (a reload may change it)
	queue     []*job
	workers   int
	idle      int
	starting  int // workers started that have not yet looked for a job
	// waiters are the idle workers' wake-up channels, the most recently
	// idle last; woken: workers woken for a queued job that have not yet
	// taken it. A queued job wakes one idle worker, not all of them.
	waiters []chan struct{}
	woken   int
	popped  chan struct{} // closed (and replaced) when a job is taken
	// circuit breaker: consecutive attempts that reached no server.
	failures  int
	openUntil time.Time
	openedAt  time.Time // when it last opened (operator retries clear older marks)
	lastFail  smtpclient.Verdict
	lastDone  time.Time
	starving  bool
}

// scheduler places leased entries into destinations and runs their
// workers: it owns the destinations, the global slot count and every
// destination's circuit breaker, under one mutex.
type scheduler struct {
	log      zerolog.Logger
	rt       *atomic.Pointer[runtime]
	fin      *finisher
	att      *attempter
	mu       sync.Mutex
	dests    map[string]*dest
	slots    int           // workers (each with at most one connection) in use
	starving []*dest       // destinations waiting for a global slot
	reclaim  chan struct{} // closed (and replaced) to ask idle workers to exit
	stopping bool
	stopCh   chan struct{}
	wg       sync.WaitGroup  // workers
	placing  sync.WaitGroup  // entries waiting for their destination key
	ctx      context.Context // delivery context: cancelled when the grace period ends
	shaper   *shaping.Shaper // nil: no shaping
	sources  sourceCount     // open connections per egress source
	// waitingSent: the per-class waiting counts last reported (housekeeping only).
	waitingSent map[shaping.Class]int
}

func newScheduler(log zerolog.Logger, rt *atomic.Pointer[runtime], fin *finisher, att *attempter) *scheduler {
	return &scheduler{log: log, rt: rt, fin: fin, att: att, dests: map[string]*dest{},
		reclaim: make(chan struct{}), stopCh: make(chan struct{})}
}

func broadcast(ch *chan struct{}) {
	close(*ch)
	*ch = make(chan struct{})
}

// dispatch places a freshly leased entry into its destination. The
// destination key of MX delivery is the domain's MX host set
// (smtpclient.Client.Destination); when it is not in the DNS cache yet
// the entry is placed by a goroutine of its own once the lookup is done,
// so a slow DNS answer never holds up the dispatcher.
func (s *scheduler) dispatch(ctx context.Context, en *queue.Entry) {
	defer s.recoverJob(&job{en: en}, "dispatching an entry panicked; entry deferred")
	rt := s.rt.Load()
	tr, err := rt.transport(ctx, en.Env)
	if err != nil {
		s.log.Warn().Err(err).Str("event", "tls_policy_failed").Str("domain", en.Env.Domain).
			Msg("no TLS policy for the domain; deferred")
		s.fin.deferUntried(&job{en: en}, smtpclient.ReplyLocal.WithCause("TLS policy lookup failed"))
		return
	}
	j := &job{en: en, tr: tr, queued: time.Now()}
	if key, ok := rt.client.CachedDestination(tr); ok {
		s.place(j, key)
		return
	}
	s.placing.Add(1)
	go func() {
		defer s.placing.Done()
		defer s.recoverJob(j, "placing an entry panicked; entry deferred")
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), keyLookupTimeout)
		key := rt.client.Destination(lctx, tr)
		cancel()
		s.place(j, key)
	}()
}

// place queues j in destination key: deferred at once when the breaker is
// open or the queue is full (waiting briefly only for a destination that
// delivers briskly); otherwise queued, with a worker sure to take it.
func (s *scheduler) place(j *job, key string) {
	pool := s.rt.Load().pools.of(j.en.Env.User)
	j.key = poolKey(key, pool)
	if at := j.en.Env.Retried; !at.IsZero() {
		s.clearMarks(key, at, j.en.Env.Domain) // retry.go
	}
	deadline := time.Now().Add(roomWait)
	s.mu.Lock()
	d := s.destLocked(key, pool)
	for {
		now := time.Now()
		switch {
		case s.stopping:
			s.mu.Unlock()
			s.fin.release(j)
			return
		case now.Before(d.openUntil):
			v, until := d.lastFail, d.openUntil
			s.mu.Unlock()
			s.fin.deferDown(j, unreachable(v.Reply), until)
			return
		case d.deferAll && now.Before(d.waitUntil): // suspended, or a long shaping wait (shape.go)
			why, until := d.waitWhy, d.waitUntil
			s.mu.Unlock()
			s.fin.deferShaped(j, why, until)
			return
		case len(d.queue) < destQueueCap:
			d.queue = append(d.queue, j)
			s.kickLocked(d)
			s.mu.Unlock()
			return
		case !d.brisk(now) || !now.Before(deadline):
			s.mu.Unlock()
			s.fin.deferUntried(j, replyBusy)
			return
		}
		popped := d.popped
		s.mu.Unlock()
		select {
		case <-popped:
		case <-time.After(time.Until(deadline)):
		}
		s.mu.Lock()
	}
}

func (d *dest) brisk(now time.Time) bool {
	return d.failures == 0 && now.Sub(d.lastDone) < fastWindow
}

func (s *scheduler) destLocked(target, pool string) *dest {
	key := poolKey(target, pool)
	d := s.dests[key]
	if d == nil {
		d = &dest{key: key, target: target, pool: pool, popped: make(chan struct{})}
		s.dests[key] = d
	}
	if rt := s.rt.Load(); s.shaper != nil && d.classRT != rt { // new, or reloaded: (re)classify
		d.class, d.classRT = s.classOf(target), rt
		d.observe = s.observer(d.class)
	}
	return d
}

// maxWorkers is max_per_destination (a provider's destination: only
// max_connections; its limits are the Shaper's), or 1 while the breaker
// is half-open.
func (s *scheduler) maxWorkers(d *dest) int {
	set := &s.rt.Load().set
	switch {
	case d.failures > 0:
		return 1
	case d.class.Provider != "":
		return set.MaxConnections
	}
	return set.MaxPerDestination
}

// kickLocked wakes idle workers of d and starts more while d has more
// queued jobs than idle and starting workers, the destination limit
// allows and a global slot is free. Without a free slot, d waits in line
// and idle workers elsewhere are asked to exit.
func (s *scheduler) kickLocked(d *dest) {
	// One idle worker per queued job that no woken worker will take: the
	// most recently idle first (its connection is the freshest; the
	// others may reach timeouts.idle and close theirs).
	for len(d.queue) > d.woken && len(d.waiters) > 0 {
		w := d.waiters[len(d.waiters)-1]
		d.waiters = d.waiters[:len(d.waiters)-1]
		w <- struct{}{} // buffered, and each waiter is listed once
		d.woken++
	}
	if !d.waitUntil.IsZero() && time.Now().Before(d.waitUntil) {
		return // shaping: its waker kicks it again (shape.go)
	}
	limit := s.rt.Load().set.MaxConnections
	for started := 0; !s.stopping && d.workers < s.maxWorkers(d) && len(d.queue) > d.idle+d.starting &&
		!(d.probing && started > 0); started++ {
		if s.slots >= limit {
			if !d.starving {
				d.starving = true
				s.starving = append(s.starving, d)
			}
			broadcast(&s.reclaim)
			return
		}
		s.slots++
		d.workers++
		d.starting++
		s.wg.Add(1)
		go s.worker(d)
	}
}

// worker delivers d's queued jobs over one connection, reused between
// jobs, until d has had no work for timeouts.idle or its slot is wanted.
func (s *scheduler) worker(d *dest) {
	w := &wconn{}
	defer func() {
		s.drop(w)
		s.workerExit(d)
	}()
	wake := make(chan struct{}, 1)
	for first := true; ; first = false {
		j := s.next(d, first, wake)
		if j == nil {
			return
		}
		// A reload that changed how connections are made, the source or
		// the shaping class ends the connection (shape.go: keep).
		if rt := s.att.rt.Load(); rt != w.made || j.class != w.class {
			if !w.keep(rt, d.pool, j.class) {
				s.drop(w)
			}
			w.made = rt
		}
		if !s.admit(d, j, w) { // shape.go
			return
		}
		if w.sess = s.run(d, j, w); w.sess == nil {
			s.drop(w) // the next attempt is a new connection
		}
	}
}

// run makes one attempt at j and records its result in d's breaker. A
// panic in the attempt (a bug, or a dependency's) is recovered: it is
// logged with its stack, the connection is dropped and the entry deferred
// with 451 4.3.0, so the entry is never lost and the worker goes on.
func (s *scheduler) run(d *dest, j *job, w *wconn) (next *smtpclient.Session) {
	defer func() {
		if p := recover(); p != nil {
			s.logPanic(j, p, "delivery attempt panicked; entry deferred")
			if w.sess != nil {
				w.sess.Close()
			}
			s.fin.deferBroken(j, replyPanic)
			next = nil
		}
	}()
	r := s.att.attempt(s.ctx, j, w.sess, attemptOpts{opts: j.options(w), source: w.src.Name})
	switch {
	case r.reached:
		s.record(d, true, r.last)
	case r.down:
		s.record(d, false, r.last)
	}
	return r.sess
}

// recoverJob, deferred, turns a panic while handling j into a logged
// deferral (451 4.3.0): the entry is retried, never lost.
func (s *scheduler) recoverJob(j *job, msg string) {
	if p := recover(); p != nil {
		s.logPanic(j, p, msg)
		s.fin.deferUntried(j, replyPanic)
	}
}

func (s *scheduler) logPanic(j *job, p any, msg string) {
	s.log.Error().Str("event", "delivery_panic").Str("queue_id", j.en.Env.ID).Str("domain", j.en.Env.Domain).
		Interface("panic", p).Bytes("stack", debug.Stack()).Msg(msg)
}

// next pops d's next job, waiting up to timeouts.idle; nil means exit.
// first: the worker's first call (it is no longer starting); wake: the
// worker's wake-up channel (kickLocked sends on it when a job is queued).
func (s *scheduler) next(d *dest, first bool, wake chan struct{}) *job {
	s.mu.Lock()
	defer s.mu.Unlock()
	idle := time.NewTimer(s.idleHold(d.class))
	defer idle.Stop()
	if first {
		d.starting--
	}
	for {
		if s.stopping || d.workers > s.maxWorkers(d) {
			return nil
		}
		if len(d.queue) > 0 {
			j := d.queue[0]
			d.queue[0] = nil
			d.queue = d.queue[1:]
			broadcast(&d.popped)
			j.class, j.observe = d.class, d.observe
			return j
		}
		reclaim := s.reclaim
		d.waiters = append(d.waiters, wake)
		d.idle++
		s.mu.Unlock()
		var exit bool
		select {
		case <-wake:
			wake <- struct{}{} // put back: taken below, under the lock
		case <-reclaim:
			exit = true
		case <-idle.C:
			exit = true
		case <-s.stopCh:
		}
		s.mu.Lock()
		d.idle--
		select {
		case <-wake: // woken (maybe while leaving for another reason)
			d.woken--
		default: // not woken: no longer waiting
			if i := slices.Index(d.waiters, wake); i >= 0 {
				d.waiters = slices.Delete(d.waiters, i, i+1)
			}
		}
		if exit && len(d.queue) == 0 {
			return nil
		}
	}
}

// workerExit frees the worker's slot and hands it to a starving destination.
func (s *scheduler) workerExit(d *dest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.slots--
	d.workers--
	if len(d.queue) > 0 {
		s.kickLocked(d)
	}
	for len(s.starving) > 0 && !s.stopping {
		sd := s.starving[0]
		s.starving = s.starving[1:]
		sd.starving = false
		s.kickLocked(sd)
		if sd.starving { // still no slot
			break
		}
	}
	if d.workers == 0 && len(d.queue) == 0 && d.failures == 0 && !d.starving && !d.waking {
		delete(s.dests, d.key)
	}
	s.wg.Done()
}

// record updates d's breaker after an attempt. reached: a server answered
// the transaction; otherwise every host failed at the connection level (or
// DNS failed temporarily) and the breaker opens for the retry interval,
// doubling per failed probe; the jobs waiting for d are deferred.
func (s *scheduler) record(d *dest, reached bool, v smtpclient.Verdict) {
	s.mu.Lock()
	now := time.Now()
	if reached {
		d.failures, d.openUntil, d.lastDone = 0, time.Time{}, now
		s.kickLocked(d)
		s.mu.Unlock()
		return
	}
	d.lastFail = v
	opened := !now.Before(d.openUntil)
	if opened {
		// Only a failure after the breaker (re)closed escalates it, not
		// the other connections that were already trying when it opened.
		d.failures++
		sched := s.rt.Load().schedule
		open := sched[0] << min(d.failures-1, 16)
		d.openUntil, d.openedAt = now.Add(min(open, maxBreakerOpen)), now
	}
	failures, until := d.failures, d.openUntil
	waiting := d.queue
	d.queue = nil
	broadcast(&d.popped)
	s.mu.Unlock()
	if opened {
		s.log.Warn().Str("event", "destination_down").Str("destination", d.key).Int("failures", failures).
			Time("until", until).Str("reply", v.Reply.String()).
			Msg("destination unreachable; deferring its entries without connecting")
	}
	for _, j := range waiting {
		s.fin.deferDown(j, unreachable(v.Reply), until)
	}
}

// sweep defers jobs that waited longer than maxQueueWait for a connection
// (marked with the destination's shaping wait, if any) and reports the
// entries waiting per shaping class.
func (s *scheduler) sweep(now time.Time) {
	type lateJob struct {
		j     *job
		why   string
		until time.Time
	}
	var late []lateJob
	s.mu.Lock()
	for _, d := range s.dests {
		keep := d.queue[:0]
		for _, j := range d.queue {
			if now.Sub(j.queued) > maxQueueWait {
				late = append(late, lateJob{j, d.waitWhy, d.waitUntil})
			} else {
				keep = append(keep, j)
			}
		}
		clear(d.queue[len(keep):])
		d.queue = keep
		if d.workers == 0 && len(d.queue) == 0 && !d.starving && !d.waking && now.Sub(d.openUntil) > maxBreakerOpen {
			delete(s.dests, d.key) // forget an old breaker
		}
	}
	s.mu.Unlock()
	for _, l := range late {
		if l.why != "" {
			s.fin.deferShaped(l.j, l.why, l.until)
		} else {
			s.fin.deferUntried(l.j, replyBusy)
		}
	}
	s.reportWaiting() // shape.go
}

// stop makes workers exit after their current job and releases every
// queued job (immediately redeliverable to other processes).
func (s *scheduler) stop() {
	s.mu.Lock()
	s.stopping = true
	close(s.stopCh)
	var queued []*job
	for _, d := range s.dests {
		queued = append(queued, d.queue...)
		d.queue = nil
	}
	s.mu.Unlock()
	for _, j := range queued {
		s.fin.release(j)
	}
}
