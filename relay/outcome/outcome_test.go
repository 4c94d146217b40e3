package outcome_test

import (
	"testing"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/outcome"
)

func TestReplyClasses(t *testing.T) {
	cases := []struct {
		r                   outcome.Reply
		ok, temporary, perm bool
		str                 string
	}{
		{outcome.Reply{Code: 250, Enh: "2.0.0", Text: "OK"}, true, false, false, "250 2.0.0 OK"},
		{outcome.Reply{Code: 451, Enh: "4.4.2", Text: "lost"}, false, true, false, "451 4.4.2 lost"},
		{outcome.Reply{Code: 550, Enh: "", Text: "no"}, false, false, true, "550 no"},
	}
	for _, c := range cases {
		if c.r.OK() != c.ok || c.r.Temporary() != c.temporary || c.r.Permanent() != c.perm ||
			c.r.String() != c.str {
			t.Errorf("%+v: OK %v Temporary %v Permanent %v String %q",
				c.r, c.r.OK(), c.r.Temporary(), c.r.Permanent(), c.r.String())
		}
	}
	got := (outcome.Reply{Code: 451, Enh: "4.3.0", Text: "local error"}).WithCause("disk")
	if got.Text != "local error: disk" {
		t.Errorf("WithCause: %q", got.Text)
	}
}

// The status strings are the events package's, so stored events and
// consumers of the event stream are unaffected.
func TestStatusMatchesEvents(t *testing.T) {
	for s, want := range map[outcome.Status]string{outcome.Delivered: events.StatusDelivered,
		outcome.Deferred: events.StatusDeferred, outcome.Failed: events.StatusFailed} {
		if string(s) != want {
			t.Errorf("status %q, events say %q", s, want)
		}
	}
}

func TestStoredRoundTrip(t *testing.T) {
	r := outcome.Reply{Code: 451, Enh: "4.7.1", Text: "greylisted"}
	s := outcome.ToStored(r, "mx.example")
	if s != (queue.Reply{Code: 451, Enh: "4.7.1", Text: "greylisted", MX: "mx.example"}) || outcome.FromStored(s) != r {
		t.Errorf("round trip: %+v -> %+v -> %+v", r, s, outcome.FromStored(s))
	}
}
