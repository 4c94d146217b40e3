package shaping

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Rate is Count per Per; Count 0 is unlimited. A rate is a pace: sends
// are spaced Per/Count apart with a burst of at most Burst(), never a
// period's quota at once.
type Rate struct {
	Count int
	Per   time.Duration
}

// Unlimited reports whether r limits nothing.
func (r Rate) Unlimited() bool { return r.Count <= 0 || r.Per <= 0 }

// Interval is the pace: the time between two sends (0 when unlimited).
func (r Rate) Interval() time.Duration {
	if r.Unlimited() {
		return 0
	}
	return max(r.Per/time.Duration(r.Count), time.Nanosecond)
}

// Burst is how many sends beyond the pace any window may see: in every
// window of length W the cluster sends at most Count·W/Per + Burst().
// It is the idle allowance (paceBurst intervals), one, and blockSpan's
// worth of intervals (how late a reserved token may be spent), rounded up:
// 3 at 60/m, 7 at 600/m.
func (r Rate) Burst() int {
	if r.Unlimited() {
		return 0
	}
	T := r.Interval()
	return paceBurst + 1 + int((blockSpan+T-1)/T)
}

// String is "N/s", "N/m", "N/h", "N/d" (or N per a Go duration); "" when
// unlimited.
func (r Rate) String() string {
	if r.Unlimited() {
		return ""
	}
	for _, u := range rateUnits {
		if r.Per == u.per {
			return strconv.Itoa(r.Count) + "/" + u.name
		}
	}
	return strconv.Itoa(r.Count) + "/" + r.Per.String()
}

// MarshalText writes String (JSON: "3000/m", "" when unlimited).
func (r Rate) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText reads what MarshalText writes.
func (r *Rate) UnmarshalText(b []byte) error {
	s := strings.TrimSpace(string(b))
	if s == "" {
		*r = Rate{}
		return nil
	}
	num, unit, ok := strings.Cut(s, "/")
	n, err := strconv.Atoi(num)
	if !ok || err != nil || n < 0 {
		return fmt.Errorf("shaping: bad rate %q (want N/s, N/m, N/h or N/d)", s)
	}
	for _, u := range rateUnits {
		if unit == u.name {
			*r = Rate{Count: n, Per: u.per}
			return nil
		}
	}
	per, err := time.ParseDuration(unit)
	if err != nil || per <= 0 {
		return fmt.Errorf("shaping: bad rate %q (want N/s, N/m, N/h or N/d)", s)
	}
	*r = Rate{Count: n, Per: per}
	return nil
}

var rateUnits = []struct {
	name string
	per  time.Duration
}{{"s", time.Second}, {"m", time.Minute}, {"h", time.Hour}, {"d", 24 * time.Hour}}

// Limits are one class's limits; zero values are unlimited.
type Limits struct {
	Connections    int  `json:"connections"`     // concurrent connections
	Rate           Rate `json:"rate"`            // messages
	PerConnection  int  `json:"per_connection"`  // messages on one connection, then QUIT
	ConnectionRate Rate `json:"connection_rate"` // new connections
	PerSource      bool `json:"per_source"`      // each limit applies per egress source instead of in total
}

// unlimited reports whether l limits nothing at all.
func (l Limits) unlimited() bool {
	return l.Connections <= 0 && l.Rate.Unlimited() && l.PerConnection <= 0 && l.ConnectionRate.Unlimited()
}

// Provider is a mailbox provider: destinations whose MX hosts match MX
// share Limits cluster-wide.
type Provider struct {
	Name string
	// MX are host patterns, lower-case A-labels without a trailing dot:
	// ".google.com" matches every host under google.com (and google.com
	// itself); "mx.example.net" matches that host only.
	MX     []string
	Limits Limits
}

// Action is what a rule does: Suspend for a time, or lower the rate to
// Rate For a time.
type Action struct {
	Suspend time.Duration
	Rate    Rate
	For     time.Duration
}

// Rule reacts to replies: Threshold matching replies within Window, counted
// cluster-wide per provider, trigger Action for that provider.
type Rule struct {
	Name      string         // for logs; "rule N" (1-based) when empty
	Providers []string       // provider names, or "*" (every class, destinations of the default too)
	Reply     *regexp.Regexp // matched against "<code> <enhanced> <text>"
	Threshold int            // at least 1
	Window    time.Duration
	Action    Action
}

// Settings are the shaping configuration (built by cmd from
// delivery.shaping).
type Settings struct {
	// Default limits destinations that match no provider, per node and
	// per destination (like the old delivery.max_per_destination), with
	// no bucket traffic.
	Default   Limits
	Providers []Provider // first match wins
	Rules     []Rule
	// BackoffFor is how long the builtin backoff lasts (default
	// DefaultBackoffFor): without a matching rule, a 421 at greeting,
	// 4.7.28, 4.7.650, or 4.7.0/4.7.1 whose text matches
	// rate|too many|throttl(ed|ing) halves the class's effective rate.
	BackoffFor time.Duration
}

// DefaultBackoffFor is the builtin backoff's duration when
// Settings.BackoffFor is 0.
const DefaultBackoffFor = 15 * time.Minute

// Options configure Open.
type Options struct {
	JetStream jetstream.JetStream // holds the bucket; required
	Replicas  int                 // nats.replicas of the bucket
	Node      string              // this node's name (owner of its leases)
	Logger    zerolog.Logger
	// Events is called when a suspension or rate change begins or ends
	// (once in the cluster: by the node that began it). It must not block.
	Events func(Change)
	Now    func() time.Time // default time.Now (tests)
}

// Change is a suspension or rate change of a class that began or ended.
type Change struct {
	Class  Class
	Rule   string    // the rule's name; "backoff" for the builtin backoff
	Action string    // ActionSuspend, ActionRate or ActionBackoff
	Rate   Rate      // the rate in effect (ActionRate, ActionBackoff)
	Until  time.Time // when it ends
	Reason string    // the reply that triggered it
	Ended  bool      // false: began; true: ended (time up, or lifted by Resume)
	// Resumed: ended early by Resume.
	Resumed bool
}

// Change actions.
const (
	ActionSuspend = "suspend"
	ActionRate    = "rate"
	ActionBackoff = "backoff"
)

// Class names the limit group of a destination: a provider (limits
// cluster-wide) or the destination itself (the default limits, per node).
type Class struct {
	Provider string // "" for the default
	Key      string // the provider's name, or "dest:"+destination
}

// Wait says why and until when a class cannot take more now.
type Wait struct {
	Until  time.Time
	Reason string // one of the Reason constants
}

// Wait reasons.
const (
	ReasonConnections    = "connections"
	ReasonConnectionRate = "connection_rate"
	ReasonRate           = "rate"
	ReasonSuspended      = "suspended"
	ReasonPerConnection  = "per_connection"
	ReasonCanceled       = "canceled" // the caller's ctx ended
)

// Reply is one remote reply seen by an attempt (or a failed greeting).
type Reply struct {
	Code       int
	Enhanced   string // "4.7.28"; "" when none
	Text       string
	AtGreeting bool
}

func (r Reply) String() string {
	if r.Enhanced == "" {
		return strconv.Itoa(r.Code) + " " + r.Text
	}
	return strconv.Itoa(r.Code) + " " + r.Enhanced + " " + r.Text
}
