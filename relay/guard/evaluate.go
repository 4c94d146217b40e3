package guard

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/stats"
)

const (
	// evalAttempts bounds the compare-and-set rounds of one evaluation.
	evalAttempts = 5
	// evalTimeout bounds one user's evaluation.
	evalTimeout   = 10 * time.Second
	ruleBounce    = "bounce_rate"
	ruleComplaint = "complaint_rate"
)

// Evaluate checks each user's rates against its rule (stats'
// Options.AfterFlush: the users whose counts just changed). Failures are
// logged; the next flush evaluates again.
func (g *Guard) Evaluate(ctx context.Context, users []string) {
	rules := *g.rules.Load()
	for _, u := range users {
		r, ok := rules[u]
		if !ok || u == "" {
			continue
		}
		if err := g.evaluate(ctx, u, r); err != nil {
			g.o.Log.Warn().Err(err).Str("event", "guard_failed").Str("user", u).
				Msg("bounce-rate guard not evaluated; tried again after the next counts")
		}
	}
}

// evaluate decides for one user from the watched state; only a decision
// that changes it reads the key and writes by CAS, and only the writer
// that wins publishes the events.
func (g *Guard) evaluate(ctx context.Context, user string, r Rule) error {
	ctx, cancel := context.WithTimeout(ctx, evalTimeout)
	defer cancel()
	st := g.state(user)
	for range evalAttempts {
		if st.Paused {
			return nil // nothing to decide until a resume
		}
		since := g.o.Now().Add(-r.Window)
		if st.WindowStart.After(since) {
			since = st.WindowStart
		}
		c, err := g.o.Stats.WindowTotals(ctx, user, since)
		if err != nil {
			return err
		}
		next, evs := decide(user, r, st, c, g.o.Now())
		if next == st {
			return nil
		}
		fresh, rev, err := read(ctx, g.kv, user)
		if err != nil {
			return err
		}
		if fresh != st { // the watcher is behind: decide on the stored state
			st = fresh
			continue
		}
		ok, err := write(ctx, g.kv, user, next, rev)
		if err != nil {
			return err
		}
		if ok {
			for _, e := range evs {
				g.o.Events.Emit(e)
			}
			return nil
		}
		if st, _, err = read(ctx, g.kv, user); err != nil { // another node came first
			return err
		}
	}
	return fmt.Errorf("guard: state of %s kept changing", user)
}

// decide is the new state for counts c under rule r, with the events to
// publish when it is recorded. Rates count at or past a threshold; nothing
// happens below the rule's minimum volume.
func decide(user string, r Rule, st State, c stats.Counts, now time.Time) (State, []*events.Event) {
	if c.Delivered+c.Bounced < r.MinVolume {
		return st, nil
	}
	br, cr := c.BounceRate(), c.ComplaintRate()
	win := windowText(r.Window)
	var evs []*events.Event
	switch {
	case r.Pause > 0 && br >= r.Pause:
		st.Paused, st.PausedAt = true, now.UTC()
		st.Reason = "bounce rate " + pct(br) + " over " + win
		evs = append(evs, &events.Event{Event: events.Paused, User: user, Rule: ruleBounce,
			Reason: st.Reason + " (pause at " + pct(r.Pause) + ")"})
	case r.ComplaintPause > 0 && cr >= r.ComplaintPause:
		st.Paused, st.PausedAt = true, now.UTC()
		st.Reason = "complaint rate " + pct(cr) + " over " + win
		evs = append(evs, &events.Event{Event: events.Paused, User: user, Rule: ruleComplaint,
			Reason: st.Reason + " (pause at " + pct(r.ComplaintPause) + ")"})
	}
	warn := func(warned *bool, rate, at float64, rule, what string) {
		switch {
		case at > 0 && rate >= at && !*warned:
			*warned = true
			evs = append(evs, &events.Event{Event: events.BounceRateWarning, User: user, Rule: rule,
				Reason: what + " " + pct(rate) + " over " + win + " (warn at " + pct(at) + ")"})
		case *warned && (at == 0 || rate < at):
			*warned = false // below again: the next crossing warns again
		}
	}
	warn(&st.BounceWarned, br, r.Warn, ruleBounce, "bounce rate")
	warn(&st.ComplaintWarned, cr, r.ComplaintWarn, ruleComplaint, "complaint rate")
	return st, evs
}

// pct writes a fraction as a percentage with one decimal ("11.2%"), more
// for small ones ("0.15%").
func pct(f float64) string {
	p := f * 100
	if p != 0 && p < 1 {
		return strconv.FormatFloat(p, 'f', 2, 64) + "%"
	}
	return strconv.FormatFloat(p, 'f', 1, 64) + "%"
}

// windowText writes a window as the config does ("24h", "90m").
func windowText(d time.Duration) string {
	switch {
	case d%time.Hour == 0:
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	case d%time.Minute == 0:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	}
	return d.String()
}
