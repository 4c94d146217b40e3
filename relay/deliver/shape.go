package deliver

import (
	"fmt"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/relay/shaping"
	"github.com/jetrelay/jetrelay/relay/smtpclient"
)

// Traffic shaping (issue 16; relay/shaping decides, this file obeys).
// Each destination belongs to a shaping class: a provider its MX hosts
// match (limits cluster-wide), or the destination itself (the default
// limits, per node). Before a worker opens a connection it takes a slot
// (Shaper.Connect, with a connection_rate token, for its egress source);
// before each message on it a message token (Conn.Send). A worker that
// reaches per_connection says QUIT and connects again.
//
// A refusal never blocks the dispatcher or another destination. The
// refused job goes back to the front of its destination's queue, the
// worker gives up its connection and its global slot, and the
// destination waits: no worker starts for it until the Wait's time, or
// until the class changes (Shaper.Changed: a slot freed anywhere, a
// suspension lifted, a reload), watched by one goroutine per waiting
// destination. Then one worker probes; once it connects the others may
// start, so a busy class sees one refused Connect per change, not one per
// idle worker. Entries keep their leases meanwhile (lease.go). A wait for
// the message pace of at most paceHold is spent holding the connection.
// A suspension, or a wait longer than maxQueueWait (a slow rate), defers
// the destination's queued and newly arriving entries at once, and an entry
// that waited maxQueueWait in all is deferred too: without an attempt
// counted (451 4.4.5, marked Waiting for queue ls), due again no earlier
// than the wait ends; delay notices and retry.max_age apply as to any
// deferral. An entry takes one message token: under VERP its
// per-recipient transactions on the connection share it (a known limit).
// Every reply of an attempt goes to Shaper.Observe (rules and
// the builtin backoff). Entries waiting in memory are reported per class
// (Shaper.SetWaiting) once a second.

// paceHold bounds the message-pace waits spent holding the connection.
const paceHold = 5 * time.Second

// maxAdmitRounds bounds one job's rounds of reconnecting (per_connection)
// and pacing before its destination waits a second instead.
const maxAdmitRounds = 64

// minWait is the shortest wait of a refused destination.
const minWait = 10 * time.Millisecond

// wconn is a worker's connection: the session, its shaping slot and its
// egress source. ready: slot and source are taken (for the session open
// now, or the one the next attempt dials).
type wconn struct {
	sess  *smtpclient.Session
	slot  *shaping.Conn
	src   Source
	class shaping.Class // of the slot
	ready bool
	made  *runtime // the runtime sess was made under
}

// keep reports whether w's connection, made under w.made, may go on
// under rt for pool and class: a reload that left the way connections
// are made (port, source_ip, networks, CA file, EHLO name), w's source
// and the class alone does not end it (issue 16 point 6). A route's or a
// domain's TLS plan is part of its destination key already.
func (w *wconn) keep(rt *runtime, pool string, class shaping.Class) bool {
	if w.made == nil || w.class != class || connShape(w.made.set) != connShape(rt.set) {
		return false
	}
	if w.src.Name == "" {
		return true
	}
	for _, src := range rt.pools.byName[pool] {
		if src == w.src {
			return true
		}
	}
	return false
}

// connShape is what a connection depends on beyond its destination key.
func connShape(set Settings) string {
	d := set.Delivery
	return fmt.Sprint(d.Port, "|", d.SourceIP, "|", d.DeniedNetworks, "|", d.AllowedNetworks, "|",
		d.TLS.CAFile, "|", set.Hostname)
}

// classOf is the shaping class of destination key (a route: its own).
func (s *scheduler) classOf(key string) shaping.Class {
	if strings.HasPrefix(key, "route:") {
		return shaping.Class{Key: "dest:" + key}
	}
	return s.shaper.Classify(key, mxHosts(key))
}

// mxHosts are the MX host names in a destination key
// (smtpclient.Client.Destination: "mxset:a,b|plan", or "mx:domain|plan"
// for a domain that is its own host).
func mxHosts(key string) []string {
	if rest, ok := strings.CutPrefix(key, "mxset:"); ok {
		hosts, _, _ := strings.Cut(rest, "|")
		return strings.Split(hosts, ",")
	}
	if rest, ok := strings.CutPrefix(key, "mx:"); ok {
		dom, _, _ := strings.Cut(rest, "|")
		return []string{dom}
	}
	return nil
}

// observer passes an attempt's replies to the Shaper under class c.
func (s *scheduler) observer(c shaping.Class) func(smtpclient.Reply, bool) {
	return func(r smtpclient.Reply, atGreeting bool) {
		s.shaper.Observe(c, shaping.Reply{Code: r.Code, Enhanced: r.Enh, Text: r.Text, AtGreeting: atGreeting})
	}
}

// options are the attempt options of j on w's connection.
func (j *job) options(w *wconn) smtpclient.AttemptOptions {
	return smtpclient.AttemptOptions{Source: w.src.Addr, Hostname: w.src.EHLO, Observe: j.observe}
}

// admit readies w for j: a slot and a source for a new connection, then a
// message token. false: j went back to d's queue (or was released when
// stopping), d waits, and the worker exits.
func (s *scheduler) admit(d *dest, j *job, w *wconn) bool {
	if s.shaper == nil && d.pool == "" {
		return true
	}
	for range maxAdmitRounds {
		if !w.ready {
			if wait, ok := s.connect(d, j.class, w); !ok {
				s.waitFor(d, j, wait)
				return false
			}
		}
		if w.slot == nil {
			return true
		}
		wait, ok := w.slot.Send(s.ctx)
		switch {
		case ok:
			return true
		case wait.Reason == shaping.ReasonPerConnection:
			s.drop(w) // QUIT; the next round connects again
		case wait.Reason == shaping.ReasonRate && time.Until(wait.Until) <= s.paceHold():
			if !s.pause(wait.Until) {
				s.waitFor(d, j, wait) // stopping: released
				return false
			}
		default:
			s.drop(w)
			s.waitFor(d, j, wait)
			return false
		}
	}
	s.drop(w)
	s.waitFor(d, j, shaping.Wait{Until: time.Now().Add(time.Second), Reason: shaping.ReasonRate})
	return false
}

// connect takes a slot for a new connection of d on the pool's source
// with the fewest connections that shaping allows. Refused on every
// source: the earliest Wait.
func (s *scheduler) connect(d *dest, class shaping.Class, w *wconn) (shaping.Wait, bool) {
	srcs := s.rt.Load().pools.byName[d.pool]
	if len(srcs) == 0 {
		srcs = []Source{{}}
	} else {
		srcs = s.sources.order(srcs)
	}
	var first shaping.Wait
	for _, src := range srcs {
		if s.shaper != nil {
			c, wait, ok := s.shaper.Connect(s.ctx, class, src.Name)
			if !ok {
				if first.Until.IsZero() || wait.Until.Before(first.Until) {
					first = wait
				}
				continue
			}
			w.slot = c
		}
		w.src, w.ready, w.class = src, true, class
		s.sources.add(src.Name, 1)
		s.mu.Lock()
		if d.probing { // the class has room again: start the other workers
			d.probing = false
			s.kickLocked(d)
		}
		s.mu.Unlock()
		return shaping.Wait{}, true
	}
	return first, false
}

// drop closes w's connection (QUIT) and gives its slot and source back.
func (s *scheduler) drop(w *wconn) {
	if w.sess != nil {
		w.sess.Quit(time.Second)
		w.sess = nil
	}
	if w.slot != nil {
		w.slot.Release()
		w.slot = nil
	}
	if w.ready {
		s.sources.add(w.src.Name, -1)
	}
	w.src, w.ready = Source{}, false
}

// paceHold is the longest pace wait spent holding a connection: paceHold,
// and at most half of timeouts.idle, so the connection is still good.
func (s *scheduler) paceHold() time.Duration {
	return min(paceHold, s.rt.Load().set.Timeouts.Idle.D()/2)
}

// pause waits until until (at least a millisecond); false: stopping.
func (s *scheduler) pause(until time.Time) bool {
	t := time.NewTimer(max(time.Until(until), time.Millisecond))
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.stopCh:
	case <-s.ctx.Done():
	}
	return false
}

// waitFor puts j back at the front of d's queue and makes d wait for
// wait: deferring its queue at once when the wait is longer than
// maxQueueWait, else watched by a waker until it ends or the class
// changes. Stopping, j is released.
func (s *scheduler) waitFor(d *dest, j *job, wait shaping.Wait) {
	why := "shaping: " + wait.Reason + " (" + className(j.class) + ")"
	if soon := time.Now().Add(minWait); wait.Until.Before(soon) {
		wait.Until = soon // never a busy loop, whatever the Wait says
	}
	s.mu.Lock()
	if s.stopping || s.ctx.Err() != nil {
		s.mu.Unlock()
		s.fin.release(j)
		return
	}
	d.queue = append(d.queue, nil)
	copy(d.queue[1:], d.queue)
	d.queue[0] = j
	d.probing = true
	if !wait.Until.Before(d.waitUntil) {
		d.waitUntil, d.waitWhy = wait.Until, why
	}
	var late []*job
	if wait.Reason == shaping.ReasonSuspended || time.Until(d.waitUntil) > maxQueueWait {
		d.deferAll = true
		late, d.queue = d.queue, nil
		broadcast(&d.popped)
	}
	if !d.waking && s.shaper != nil {
		d.waking = true
		go s.wake(d)
	}
	until, why := d.waitUntil, d.waitWhy
	s.mu.Unlock()
	if len(late) > 0 {
		s.log.Info().Str("event", "shaping_wait").Str("destination", d.key).Str("class", j.class.Key).
			Str("reason", wait.Reason).Time("until", until).Int("entries", len(late)).
			Msg("shaping makes the destination wait; its entries are deferred without an attempt")
	}
	for _, j := range late {
		s.fin.deferShaped(j, why, until)
	}
}

// className is the provider, or the destination of a default class.
func className(c shaping.Class) string {
	if c.Provider != "" {
		return c.Provider
	}
	return strings.TrimPrefix(c.Key, "dest:")
}

// wake ends d's wait when its time is up or its class changes, and starts
// workers for what d has queued.
func (s *scheduler) wake(d *dest) {
	defer s.recoverWake(d)
	for {
		s.mu.Lock()
		class := d.class
		s.mu.Unlock()
		changed := s.shaper.Changed(class) // before reading the wait: no change is missed
		s.mu.Lock()
		until := d.waitUntil
		s.mu.Unlock()
		t := time.NewTimer(max(time.Until(until), time.Millisecond))
		var now bool
		select {
		case <-t.C:
		case <-changed:
			now = true
		case <-s.stopCh:
		}
		t.Stop()
		s.mu.Lock()
		if now || s.stopping || !time.Now().Before(d.waitUntil) {
			d.waitUntil, d.waitWhy, d.waking, d.deferAll = time.Time{}, "", false, false
			s.kickLocked(d)
			s.mu.Unlock()
			return
		}
		s.mu.Unlock() // the wait was extended meanwhile
	}
}

// recoverWake, deferred, logs a panic of a waker and ends d's wait, so
// its entries are not stranded.
func (s *scheduler) recoverWake(d *dest) {
	if p := recover(); p != nil {
		s.log.Error().Str("event", "delivery_panic").Str("destination", d.key).Interface("panic", p).
			Msg("shaping waker panicked; the destination's wait ends")
		s.mu.Lock()
		d.waitUntil, d.waitWhy, d.waking, d.deferAll = time.Time{}, "", false, false
		s.kickLocked(d)
		s.mu.Unlock()
	}
}

// reportWaiting tells the Shaper how many entries of each provider wait
// on this node (queued in its destinations: for a slot, the pace or a
// worker); providers that had some at the last report and no longer do
// get 0. Deferred entries are in the stream, not counted here.
func (s *scheduler) reportWaiting() {
	if s.shaper == nil {
		return
	}
	now := map[shaping.Class]int{}
	s.mu.Lock()
	for _, d := range s.dests {
		if d.class.Provider != "" && len(d.queue) > 0 {
			now[d.class] += len(d.queue)
		}
	}
	s.mu.Unlock()
	for c := range s.waitingSent {
		if _, ok := now[c]; !ok {
			s.shaper.SetWaiting(c, 0)
		}
	}
	for c, n := range now {
		s.shaper.SetWaiting(c, n)
	}
	s.waitingSent = now
}

// sharedIdle is how long an idle connection of a provider's class is
// kept: its slot counts against a cluster-wide limit, and another node
// may have entries waiting for it, which it cannot ask for back.
const sharedIdle = 2 * time.Second

// idleHold is how long a worker of class c keeps an idle connection:
// timeouts.idle, or at most sharedIdle for a provider.
func (s *scheduler) idleHold(c shaping.Class) time.Duration {
	idle := s.rt.Load().set.Timeouts.Idle.D()
	if c.Provider != "" && s.shaper != nil {
		return min(idle, sharedIdle)
	}
	return idle
}
