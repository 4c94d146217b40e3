package shaping

import (
	"encoding/json"
	"sync/atomic"
	"time"
)

// override is a rule's action (key s.P) or the builtin backoff (b.P) of
// one class, as stored in the bucket until Until (its TTL).
type override struct {
	Action string    `json:"action"` // ActionSuspend, ActionRate, ActionBackoff
	Rate   Rate      `json:"rate,omitempty"`
	At     time.Time `json:"at"`
	Until  time.Time `json:"until"`
	Rule   string    `json:"rule"`
	Reason string    `json:"reason"` // the reply that triggered it
	Node   string    `json:"node"`   // who began it (and logs and events its end)
	rev    uint64
	ended  atomic.Bool // its end was logged (on the node that began it)
}

// suspends reports whether o suspends its class at now (nil-safe).
func (o *override) suspends(now time.Time) bool {
	return o != nil && o.Action == ActionSuspend && now.Before(o.Until)
}

// lowers reports whether o lowers the rate at now (nil-safe).
func (o *override) lowers(now time.Time) bool {
	return o != nil && o.Action != ActionSuspend && now.Before(o.Until) && !o.Rate.Unlimited()
}

// effective is rate r after a rule's rate and the backoff: the slowest of
// the ones in force.
func effective(r Rate, a, b *override, now time.Time) Rate {
	if a.lowers(now) && slower(a.Rate, r) {
		r = a.Rate
	}
	if b.lowers(now) && slower(b.Rate, r) {
		r = b.Rate
	}
	return r
}

// slower reports whether a paces slower than b (anything is slower than
// unlimited).
func slower(a, b Rate) bool {
	return b.Unlimited() || (!a.Unlimited() && a.Interval() > b.Interval())
}

// halve is half of rate r, at least backoffFloor (a rate already slower
// stays).
func halve(r Rate) Rate {
	h := Rate{Count: r.Count / 2, Per: r.Per}
	if r.Count == 1 {
		h = Rate{Count: 1, Per: 2 * r.Per}
	}
	if slower(h, backoffFloor) {
		if slower(r, backoffFloor) {
			return r // already below the floor: stays
		}
		return backoffFloor
	}
	return h
}

func (o *override) encode() []byte {
	b, _ := json.Marshal(o) // plain fields: cannot fail
	return b
}

func decodeOverride(v []byte, rev uint64) *override {
	var o override
	if json.Unmarshal(v, &o) != nil || o.Until.IsZero() {
		return nil
	}
	o.rev = rev
	return &o
}

// change is the Change of o for class c.
func (o *override) change(c Class, ended, resumed bool) Change {
	return Change{Class: c, Rule: o.Rule, Action: o.Action, Rate: o.Rate, Until: o.Until, Reason: o.Reason,
		Ended: ended, Resumed: resumed}
}
