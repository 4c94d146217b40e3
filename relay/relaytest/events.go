package relaytest

import (
	"encoding/json"
	"errors"
	"sync"
	"testing"

	"github.com/jetrelay/jetrelay/relay/events"
)

// Events records lifecycle events for assertions. It is an
// events.Publisher (pass it to events.NewEmitter or events.Tee) and an
// io.Writer for a zerolog logger, keeping every JSON log line that has an
// "event" field as an events.Event (the log field names are Event's JSON
// names), so log-only lines such as destination_down count too. Wire it as
// one of the two, not both, or every emitted event is recorded twice. Safe
// for concurrent use.
type Events struct {
	mu  sync.Mutex
	evs []events.Event
}

// Publish implements events.Publisher: it keeps a copy of e.
func (r *Events) Publish(e *events.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evs = append(r.evs, *e)
}

// Write implements io.Writer for one zerolog line: a JSON object with an
// "event" field is kept (a field whose type differs from Event's is left
// out), anything else is ignored.
func (r *Events) Write(p []byte) (int, error) {
	var e events.Event
	err := json.Unmarshal(p, &e)
	var typeErr *json.UnmarshalTypeError
	if (err == nil || errors.As(err, &typeErr)) && e.Event != "" {
		r.Publish(&e)
	}
	return len(p), nil
}

// All returns every recorded event, in order.
func (r *Events) All() []events.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]events.Event(nil), r.evs...)
}

// Find returns the events of kind (every kind when kind is "") for which
// pred holds (every one when pred is nil), in order.
func (r *Events) Find(kind string, pred func(events.Event) bool) []events.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []events.Event
	for _, e := range r.evs {
		if (kind == "" || e.Event == kind) && (pred == nil || pred(e)) {
			out = append(out, e)
		}
	}
	return out
}

// Count returns len(r.Find(kind, pred)).
func (r *Events) Count(kind string, pred func(events.Event) bool) int { return len(r.Find(kind, pred)) }

// Kinds returns the kinds of the events about queue id, in order.
func (r *Events) Kinds(queueID string) []string {
	var out []string
	for _, e := range r.Find("", func(e events.Event) bool { return e.QueueID == queueID }) {
		out = append(out, e.Event)
	}
	return out
}

// WaitFor waits (Eventually) until an event of kind for which pred holds
// (pred nil: any) was recorded and returns the first such event.
func (r *Events) WaitFor(t testing.TB, kind string, pred func(events.Event) bool) events.Event {
	t.Helper()
	var got []events.Event
	Eventually(t, "a "+kind+" event", func() bool {
		got = r.Find(kind, pred)
		return len(got) > 0
	})
	return got[0]
}

// Rcpt is a Find predicate: events about rcpt, of status (any when "").
func Rcpt(rcpt, status string) func(events.Event) bool {
	return func(e events.Event) bool { return e.Rcpt == rcpt && (status == "" || e.Status == status) }
}
