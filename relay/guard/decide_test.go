package guard

import (
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/stats"
)

// decide: nothing below the minimum volume; complaints pause like
// bounces; a warning once per crossing, again after the rate fell below.
func TestDecide(t *testing.T) {
	r := Rule{Warn: 0.05, Pause: 0.10, ComplaintWarn: 0.001, ComplaintPause: 0.005, Window: 24 * time.Hour, MinVolume: 200}
	now := time.Now()
	cases := []struct {
		name   string
		st     State
		c      stats.Counts
		want   State
		events []string // kinds, with the reason of the last one checked below
		reason string
	}{
		{name: "below min volume", c: stats.Counts{Delivered: 100, Bounced: 50}},
		{name: "quiet", c: stats.Counts{Delivered: 1000, Bounced: 10}},
		{name: "bounce warn", c: stats.Counts{Delivered: 940, Bounced: 60}, want: State{BounceWarned: true},
			events: []string{events.BounceRateWarning}, reason: "bounce rate 6.0% over 24h (warn at 5.0%)"},
		{name: "warned already", st: State{BounceWarned: true}, c: stats.Counts{Delivered: 940, Bounced: 60},
			want: State{BounceWarned: true}},
		{name: "below again re-arms", st: State{BounceWarned: true}, c: stats.Counts{Delivered: 990, Bounced: 10}},
		{name: "bounce pause", st: State{BounceWarned: true}, c: stats.Counts{Delivered: 888, Bounced: 112},
			want:   State{BounceWarned: true, Paused: true, Reason: "bounce rate 11.2% over 24h"},
			events: []string{events.Paused}, reason: "bounce rate 11.2% over 24h (pause at 10.0%)"},
		{name: "complaint pause", c: stats.Counts{Delivered: 1000, Complaints: 6},
			want:   State{Paused: true, Reason: "complaint rate 0.60% over 24h", ComplaintWarned: true},
			events: []string{events.Paused, events.BounceRateWarning}, reason: "complaint rate 0.60% over 24h (warn at 0.10%)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, evs := decide("shop", r, tc.st, tc.c, now)
			if got.Paused {
				got.PausedAt = time.Time{}
			}
			if got != tc.want {
				t.Errorf("state %+v, want %+v", got, tc.want)
			}
			if len(evs) != len(tc.events) {
				t.Fatalf("%d events, want %v", len(evs), tc.events)
			}
			for i, e := range evs {
				if e.Event != tc.events[i] || e.User != "shop" {
					t.Errorf("event %d: %+v, want %s", i, e, tc.events[i])
				}
			}
			if len(evs) > 0 && evs[len(evs)-1].Reason != tc.reason {
				t.Errorf("reason %q, want %q", evs[len(evs)-1].Reason, tc.reason)
			}
		})
	}
}
