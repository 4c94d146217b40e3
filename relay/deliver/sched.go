package deliver

import (
	"context"
	"sync"
	"time"

	"github.com/jetrelay/jetrelay/queue"
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
)

// job is one leased entry on its way through a destination.
type job struct {
	en     *queue.Entry
	tr     Transport
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
	lastFail  Verdict
	lastDone  time.Time
	starving  bool
}

// scheduler is the engine's shared scheduling state, under one mutex.
type scheduler struct {
	mu       sync.Mutex
	dests    map[string]*dest
	slots    int           // workers (each with at most one connection) in use
	starving []*dest       // destinations waiting for a global slot
	reclaim  chan struct{} // closed (and replaced) to ask idle workers to exit
	stopping bool
	stopCh   chan struct{}
	wg       sync.WaitGroup
	ctx      context.Context // delivery context: cancelled when the grace period ends
}

func (s *scheduler) init() {
	s.dests = map[string]*dest{}
	s.reclaim = make(chan struct{})
	s.stopCh = make(chan struct{})
}

func broadcast(ch *chan struct{}) {
	close(*ch)
	*ch = make(chan struct{})
}

// dispatch places a freshly leased entry: acknowledge a superseded
// redelivery; defer at once when its destination's breaker is open or its
// queue is full (waiting briefly only for a destination that delivers
// briskly); otherwise queue it and make sure a worker will take it.
func (e *Engine) dispatch(ctx context.Context, en *queue.Entry) {
	if en.Deliveries() > 1 && en.Superseded(ctx) {
		e.log.Info().Str("event", "superseded").Str("queue_id", en.Env.ID).Str("domain", en.Env.Domain).
			Msg("redelivered entry was already rescheduled; acknowledged")
		_ = en.Done(ctx)
		return
	}
	e.leases.add(en)
	j := &job{en: en, tr: e.transport(en.Env), queued: time.Now()}
	s := &e.sched
	deadline := time.Now().Add(roomWait)
	s.mu.Lock()
	d := s.destLocked(j.tr.Key())
	for {
		now := time.Now()
		switch {
		case now.Before(d.openUntil):
			v := d.lastFail
			s.mu.Unlock()
			e.deferUntried(j, withCause(replyUnreachable, v.Reply.String()))
			return
		case len(d.queue) < destQueueCap:
			d.queue = append(d.queue, j)
			e.kickLocked(d)
			s.mu.Unlock()
			return
		case !d.brisk(now) || !now.Before(deadline):
			s.mu.Unlock()
			e.deferUntried(j, replyBusy)
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
func (e *Engine) maxWorkers(d *dest) int {
	if d.failures > 0 {
		return 1
	}
	return e.rt.Load().cfg.Delivery.MaxPerDestination
}

// kickLocked wakes idle workers of d and starts more while d has queued
// jobs, the destination limit allows and a global slot is free. Without a
// free slot, d waits in line and idle workers elsewhere are asked to exit.
func (e *Engine) kickLocked(d *dest) {
	s := &e.sched
	broadcast(&d.notify)
	limit := e.rt.Load().cfg.Delivery.MaxConnections
	for !s.stopping && d.workers < e.maxWorkers(d) && len(d.queue) > d.idle {
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
		go e.worker(d)
	}
}

// worker delivers d's queued jobs over one connection, reused between
// jobs, until d has had no work for timeouts.idle or its slot is wanted.
func (e *Engine) worker(d *dest) {
	var sess *session
	defer func() {
		if sess != nil {
			sess.quit(time.Second)
		}
		e.workerExit(d)
	}()
	for {
		j := e.next(d)
		if j == nil {
			return
		}
		sess = e.attempt(d, j, sess)
	}
}

// next pops d's next job, waiting up to timeouts.idle; nil means exit.
func (e *Engine) next(d *dest) *job {
	s := &e.sched
	idle := time.NewTimer(e.rt.Load().to.idle)
	defer idle.Stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		if s.stopping || d.workers > e.maxWorkers(d) {
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
func (e *Engine) workerExit(d *dest) {
	s := &e.sched
	s.mu.Lock()
	defer s.mu.Unlock()
	s.slots--
	d.workers--
	if len(d.queue) > 0 {
		e.kickLocked(d)
	}
	for len(s.starving) > 0 && !s.stopping {
		sd := s.starving[0]
		s.starving = s.starving[1:]
		sd.starving = false
		e.kickLocked(sd)
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
func (e *Engine) record(d *dest, reached bool, v Verdict) {
	s := &e.sched
	s.mu.Lock()
	now := time.Now()
	if reached {
		d.failures, d.openUntil, d.lastDone = 0, time.Time{}, now
		e.kickLocked(d)
		s.mu.Unlock()
		return
	}
	d.lastFail = v
	opened := !now.Before(d.openUntil)
	if opened {
		// Only a failure after the breaker (re)closed escalates it, not
		// the other connections that were already trying when it opened.
		d.failures++
		sched := e.rt.Load().schedule
		open := sched[0] << min(d.failures-1, 16)
		d.openUntil = now.Add(min(open, maxBreakerOpen))
	}
	failures, until := d.failures, d.openUntil
	waiting := d.queue
	d.queue = nil
	broadcast(&d.popped)
	s.mu.Unlock()
	if opened {
		e.log.Warn().Str("event", "destination_down").Str("destination", d.key).Int("failures", failures).
			Time("until", until).Str("reply", v.Reply.String()).Msg("destination unreachable; deferring its entries without connecting")
	}
	for _, j := range waiting {
		e.deferUntried(j, withCause(replyUnreachable, v.Reply.String()))
	}
}

// sweep defers jobs that waited longer than maxQueueWait for a connection.
func (e *Engine) sweep(now time.Time) {
	s := &e.sched
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
		e.deferUntried(j, replyBusy)
	}
}

// stop makes workers exit after their current job and releases every
// queued job (immediately redeliverable to other processes).
func (s *scheduler) stop(e *Engine) {
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
		e.release(j)
	}
}
