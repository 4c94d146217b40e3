package shaping

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/rs/zerolog"
)

const (
	// backoffStep: the builtin backoff halves a class's rate at most once
	// per step; further signals within it change nothing.
	backoffStep = time.Minute
	// maxReason bounds the reply text kept in the bucket, logs and events.
	maxReason = 256
)

var (
	// backoffFloor is the lowest rate the builtin backoff halves to.
	backoffFloor = Rate{Count: 1, Per: time.Minute}
	// backoffMinBase is the rate halved when the class has no rate and
	// sent less than this over the last minute.
	backoffMinBase = Rate{Count: 60, Per: time.Minute}
	// throttleText marks a 4.7.0/4.7.1 reply as throttling.
	throttleText = regexp.MustCompile(`(?i)rate|too many|throttl(ed|ing)`)
)

// observation is one reply waiting for the rules.
type observation struct {
	c  Class
	r  Reply
	at time.Time
}

// Observe feeds a remote reply of an attempt (or a greeting failure) of
// class c to the rules and the builtin backoff. Only 4xx and 5xx replies
// count. It never blocks: replies are handled on a goroutine of the
// Shaper (a full queue drops them), which counts thresholds cluster-wide
// in the bucket. Rules that match count their reply; a reply that no rule
// matches may trigger the builtin backoff.
func (s *Shaper) Observe(c Class, r Reply) {
	if r.Code < 400 {
		return
	}
	select {
	case s.observed <- observation{c: c, r: r, at: s.now()}:
	default:
		s.log.Debug().Str("event", "shaping_observe_dropped").Str("provider", c.Provider).Msg("reply not counted: queue full")
	}
}

func (s *Shaper) observeLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ob := <-s.observed:
			s.handle(ctx, ob)
		}
	}
}

// handle runs one reply through every rule, then the builtin backoff.
func (s *Shaper) handle(ctx context.Context, ob observation) {
	set := s.set.Load()
	text := ob.r.String()
	matched := false
	for i := range set.rules {
		ru := &set.rules[i]
		if ru.Reply == nil || !ru.applies(ob.c) || !ru.Reply.MatchString(text) {
			continue
		}
		matched = true
		if s.reached(ctx, ru, ob) {
			s.act(ctx, ru, ob, text)
		}
	}
	if !matched && throttled(ob.r) {
		s.backoff(ctx, set, ob, text)
	}
}

// applies reports whether the rule covers class c ("*" covers every class,
// destinations of the default too).
func (ru *rule) applies(c Class) bool { return ru.all || (c.Provider != "" && ru.only[c.Provider]) }

// throttled reports the replies of the builtin backoff: a 421 at greeting,
// 4.7.28 (Gmail), 4.7.650 (Microsoft), or 4.7.0/4.7.1 saying rate, too many
// or throttled (RFC 3463 §3.8: 4.7.x is a temporary policy refusal).
func throttled(r Reply) bool {
	if r.Code < 400 || r.Code >= 500 {
		return false
	}
	switch r.Enhanced {
	case "4.7.28", "4.7.650":
		return true
	case "4.7.0", "4.7.1":
		return throttleText.MatchString(r.Text)
	}
	return r.AtGreeting && r.Code == 421
}

// reached counts one matching reply of the rule for the class in the
// bucket (key r.R.P: the times of the matches within the window,
// compare-and-set) and reports whether the threshold is reached now; the
// write that reaches it also clears the count, so exactly one node acts.
func (s *Shaper) reached(ctx context.Context, ru *rule, ob observation) bool {
	if ru.Threshold <= 1 {
		return true
	}
	key := "r." + kp(ru.name) + "." + kp(ob.c.Key)
	kctx, cancel := context.WithTimeout(ctx, kvTimeout)
	defer cancel()
	for range casAttempts {
		v, rev, err := get(kctx, s.kv, key)
		if err != nil {
			s.health.fail(err)
			return false
		}
		times := recent(v, ob.at.Add(-ru.Window))
		times = append(times, ob.at.UnixNano())
		hit := len(times) >= ru.Threshold
		if hit {
			times = times[:0]
		}
		data, _ := json.Marshal(times) // []int64 cannot fail
		_, err = store(kctx, s.js, s.kv, key, data, rev, ru.Window)
		if queue.IsConflict(err) {
			continue
		}
		if err != nil {
			s.health.fail(err)
			return false
		}
		return hit
	}
	return false
}

// recent decodes stored match times and keeps those after since.
func recent(v []byte, since time.Time) []int64 {
	var times []int64
	if len(v) > 0 && json.Unmarshal(v, &times) != nil {
		return nil
	}
	out := times[:0]
	for _, t := range times {
		if t > since.UnixNano() {
			out = append(out, t)
		}
	}
	return out
}

// act begins the rule's action for the class.
func (s *Shaper) act(ctx context.Context, ru *rule, ob observation, text string) {
	o := &override{At: ob.at, Rule: ru.name, Reason: bound(text), Node: s.node}
	if ru.Action.Suspend > 0 {
		o.Action, o.Until = ActionSuspend, ob.at.Add(ru.Action.Suspend)
	} else {
		o.Action, o.Rate, o.Until = ActionRate, ru.Action.Rate, ob.at.Add(ru.Action.For)
	}
	if !o.Until.After(ob.at) {
		return
	}
	// A suspension that lasts at least as long stays.
	s.begin(ctx, s.class(ob.c), "s.", o, func(cur *override) bool {
		return cur.suspends(ob.at) && !cur.Until.Before(o.Until)
	})
}

// backoff halves the class's rate for BackoffFor, at most once per
// backoffStep. Without a rate of its own the class's rate over the last
// minute (this node's for the default, the cluster's for providers, at
// least backoffMinBase) is halved.
func (s *Shaper) backoff(ctx context.Context, set *compiled, ob observation, text string) {
	st := s.class(ob.c)
	cur := st.backoff.Load()
	if cur.lowers(ob.at) && ob.at.Sub(cur.At) < backoffStep {
		return
	}
	base := effective(set.limits(ob.c.Provider).Rate, st.action.Load(), cur, ob.at)
	if base.Unlimited() {
		n := int(st.sentLastMinute() + s.othersSent(ob.c))
		base = Rate{Count: max(n, backoffMinBase.Count), Per: time.Minute}
	}
	o := &override{Action: ActionBackoff, Rate: halve(base), At: ob.at, Until: ob.at.Add(set.BackoffFor),
		Rule: "backoff", Reason: bound(text), Node: s.node}
	s.begin(ctx, st, "b.", o, func(cur *override) bool {
		return cur.lowers(ob.at) && ob.at.Sub(cur.At) < backoffStep
	})
}

// begin stores o as the class's override under prefix (s. or b.) unless
// keep says the current one stays; the node whose write wins logs it,
// calls Events and, at its end, logs and calls Events again.
func (s *Shaper) begin(ctx context.Context, st *class, prefix string, o *override, keep func(*override) bool) {
	key := prefix + st.part
	kctx, cancel := context.WithTimeout(ctx, kvTimeout)
	defer cancel()
	for range casAttempts {
		v, rev, err := get(kctx, s.kv, key)
		if err != nil {
			s.health.fail(err)
			return
		}
		if cur := decodeOverride(v, rev); cur != nil && keep(cur) {
			return
		}
		nrev, err := store(kctx, s.js, s.kv, key, o.encode(), rev, o.Until.Sub(s.now())+time.Second)
		if queue.IsConflict(err) {
			continue
		}
		if err != nil {
			s.health.fail(err)
			return
		}
		o.rev = nrev
		s.setOverride(st, prefix, o, false)
		s.began(st.Class, o)
		time.AfterFunc(max(o.Until.Sub(s.now()), 0), func() { s.expired(st, prefix, o) })
		return
	}
}

// expired logs the end of an override this node began, unless another
// replaced it meanwhile (its node logs that one).
func (s *Shaper) expired(st *class, prefix string, o *override) {
	if s.ctx.Err() != nil {
		return // closed
	}
	cur := st.action.Load()
	if prefix == "b." {
		cur = st.backoff.Load()
	}
	if cur != nil && cur != o && cur.rev != o.rev {
		o.ended.Store(true)
		return
	}
	if o.ended.CompareAndSwap(false, true) {
		s.announce(st.Class, o, false)
	}
	st.wake()
}

// began logs event=shaping for an override this node began and calls
// Options.Events.
func (s *Shaper) began(c Class, o *override) {
	classFields(s.log.Warn(), c).Str("event", "shaping").Str("rule", o.Rule).Str("action", o.Action).
		Str("rate", o.Rate.String()).Time("until", o.Until).Str("reply", o.Reason).Str("state", "began").
		Msgf("shaping: %s began", o.Action)
	if s.events != nil {
		s.events(o.change(c, false, false))
	}
}

// announce logs the end of an override this node began (resumed: lifted
// by Resume before its time) and calls Options.Events.
func (s *Shaper) announce(c Class, o *override, resumed bool) {
	state := "ended"
	if resumed {
		state = "resumed"
	}
	classFields(s.log.Info(), c).Str("event", "shaping").Str("rule", o.Rule).Str("action", o.Action).
		Str("rate", o.Rate.String()).Time("until", o.Until).Str("state", state).
		Msgf("shaping: %s %s", o.Action, state)
	if s.events != nil {
		s.events(o.change(c, true, resumed))
	}
}

// classFields adds provider, or destination for a default class.
func classFields(ev *zerolog.Event, c Class) *zerolog.Event {
	if c.Provider != "" {
		return ev.Str("provider", c.Provider)
	}
	return ev.Str("provider", "").Str("destination", strings.TrimPrefix(c.Key, "dest:"))
}

func bound(s string) string {
	if len(s) > maxReason {
		return s[:maxReason]
	}
	return s
}
