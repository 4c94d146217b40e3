package events

import "testing"

// TestMatcherMeta: every pair must match; a matching event selects its
// queue id, so later events of that message without metadata match too,
// and other messages' events do not.
func TestMatcherMeta(t *testing.T) {
	t.Parallel()
	m := &matcher{f: Filter{Meta: map[string]string{"order": "42", "shop": "eu"}}, ids: map[string]bool{},
		metaIDs: map[string]bool{}}
	cases := []struct {
		name string
		e    Event
		want bool
	}{
		{"no meta yet", Event{Event: Bounced, QueueID: "A"}, false},
		{"one pair only", Event{Event: Accepted, QueueID: "B", Meta: map[string]string{"order": "42"}}, false},
		{"value differs", Event{Event: Accepted, QueueID: "C", Meta: map[string]string{"order": "43", "shop": "eu"}}, false},
		{"all pairs and more", Event{Event: Accepted, QueueID: "A",
			Meta: map[string]string{"order": "42", "shop": "eu", "x": "y"}}, true},
		{"later event without meta", Event{Event: Bounced, QueueID: "A"}, true},
		{"other message without meta", Event{Event: Bounced, QueueID: "B"}, false},
		{"no queue id", Event{Event: Rejected}, false},
	}
	for _, tc := range cases {
		if got := m.match(&tc.e); got != tc.want {
			t.Errorf("%s: match = %v, want %v", tc.name, got, tc.want)
		}
	}
}
