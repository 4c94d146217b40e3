package deliver

import (
	"context"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jetrelay/jetrelay/queue"
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
}

// dest is one destination (an MX domain with its TLS plan, or a route):
// its local queue, its workers and its circuit breaker.
type dest struct {
	key     string
	queue   []*job
	workers int
	idle    int
	notify  chan struct{} // closed (and replaced) when a job is queued
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
	j.key = key
	if at := j.en.Env.Retried; !at.IsZero() {
		s.clearMarks(key, at, j.en.Env.Domain) // retry.go
	}
	deadline := time.Now().Add(roomWait)
	s.mu.Lock()
	d := s.destLocked(key)
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

func (s *scheduler) destLocked(key string) *dest {
	d := s.dests[key]
	if d == nil {
		d = &dest{key: key, notify: make(chan struct{}), popped: make(chan struct{})}
		s.dests[key] = d
	}
	return d
}

// maxWorkers is max_per_destination, or 1 while the breaker is half-open.
func (s *scheduler) maxWorkers(d *dest) int {
	if d.failures > 0 {
		return 1
	}
	return s.rt.Load().set.MaxPerDestination
}

// kickLocked wakes idle workers of d and starts more while d has queued
// jobs, the destination limit allows and a global slot is free. Without a
// free slot, d waits in line and idle workers elsewhere are asked to exit.
func (s *scheduler) kickLocked(d *dest) {
	broadcast(&d.notify)
	limit := s.rt.Load().set.MaxConnections
	for !s.stopping && d.workers < s.maxWorkers(d) && len(d.queue) > d.idle {
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
		s.wg.Add(1)
		go s.worker(d)
	}
}

// worker delivers d's queued jobs over one connection, reused between
// jobs, until d has had no work for timeouts.idle or its slot is wanted.
func (s *scheduler) worker(d *dest) {
	var sess *smtpclient.Session
	defer func() {
		if sess != nil {
			sess.Quit(time.Second)
		}
		s.workerExit(d)
	}()
	var made *runtime // the runtime sess was made under
	for {
		j := s.next(d)
		if j == nil {
			return
		}
		// A reload may have changed port, DNS, TLS or source address: a
		// connection from before it is not reused.
		if rt := s.att.rt.Load(); rt != made {
			if sess != nil {
				sess.Quit(time.Second)
				sess = nil
			}
			made = rt
		}
		sess = s.run(d, j, sess)
	}
}

// run makes one attempt at j and records its result in d's breaker. A
// panic in the attempt (a bug, or a dependency's) is recovered: it is
// logged with its stack, the connection is dropped and the entry deferred
// with 451 4.3.0, so the entry is never lost and the worker goes on.
func (s *scheduler) run(d *dest, j *job, sess *smtpclient.Session) (next *smtpclient.Session) {
	defer func() {
		if p := recover(); p != nil {
			s.logPanic(j, p, "delivery attempt panicked; entry deferred")
			if sess != nil {
				sess.Close()
			}
			s.fin.deferBroken(j, replyPanic)
			next = nil
		}
	}()
	r := s.att.attempt(s.ctx, j, sess)
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
func (s *scheduler) next(d *dest) *job {
	idle := time.NewTimer(s.rt.Load().set.Timeouts.Idle.D())
	defer idle.Stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		if s.stopping || d.workers > s.maxWorkers(d) {
			return nil
		}
		if len(d.queue) > 0 {
			j := d.queue[0]
			d.queue[0] = nil
			d.queue = d.queue[1:]
			broadcast(&d.popped)
			return j
		}
		notify, reclaim := d.notify, s.reclaim
		d.idle++
		s.mu.Unlock()
		var exit bool
		select {
		case <-notify:
		case <-reclaim:
			exit = true
		case <-idle.C:
			exit = true
		case <-s.stopCh:
		}
		s.mu.Lock()
		d.idle--
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
	if d.workers == 0 && len(d.queue) == 0 && d.failures == 0 && !d.starving {
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

// sweep defers jobs that waited longer than maxQueueWait for a connection.
func (s *scheduler) sweep(now time.Time) {
	var late []*job
	s.mu.Lock()
	for _, d := range s.dests {
		keep := d.queue[:0]
		for _, j := range d.queue {
			if now.Sub(j.queued) > maxQueueWait {
				late = append(late, j)
			} else {
				keep = append(keep, j)
			}
		}
		clear(d.queue[len(keep):])
		d.queue = keep
		if d.workers == 0 && len(d.queue) == 0 && !d.starving && now.Sub(d.openUntil) > maxBreakerOpen {
			delete(s.dests, d.key) // forget an old breaker
		}
	}
	s.mu.Unlock()
	for _, j := range late {
		s.fin.deferUntried(j, replyBusy)
	}
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
