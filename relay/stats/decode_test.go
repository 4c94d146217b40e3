package stats

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/relay/events"
)

func decodeSamples() []*events.Event {
	t := time.Date(2026, 12, 7, 6, 0, 0, 5, time.UTC)
	base := events.Event{Time: t, QueueID: "q1", MsgID: "<m@x>", User: "Ann", MailFrom: events.Str(""), Size: 10,
		Meta: map[string]string{"k": "v"}, Tag: "t", Arrival: t, TLS: "TLS1.3", MX: "mx.x", IP: "::1"}
	var out []*events.Event
	for _, f := range []func(e *events.Event){
		func(e *events.Event) { e.Event, e.RcptCount = events.Accepted, 3 },
		func(e *events.Event) {
			e.Event, e.Status, e.Rcpt = events.Delivery, events.StatusDelivered, "a@X.Test."
		},
		func(e *events.Event) { e.Event, e.Status, e.Domain = events.Delivery, events.StatusRelayed, "y.test" },
		func(e *events.Event) {
			e.Event, e.Status, e.Reason = events.Delivery, events.StatusDeferred, "not_attempted"
		},
		func(e *events.Event) { e.Event, e.Status, e.SMTPCode = events.Delivery, events.StatusDeferred, 451 },
		func(e *events.Event) { e.Event, e.Status, e.SMTPCode = events.Delivery, events.StatusFailed, 550 },
		func(e *events.Event) { e.Event, e.Status, e.SMTPEnh = events.Delivery, events.StatusFailed, "5.1.1" },
		func(e *events.Event) { e.Event, e.Status, e.SMTPEnh = events.Delivery, events.StatusFailed, "4.4.1" },
		func(e *events.Event) { e.Event, e.Status = events.Bounced, "failed" },
		func(e *events.Event) {
			e.Event, e.Status, e.Reply = events.Bounced, bouncedComplaint, "feedback-type abuse"
		},
		func(e *events.Event) {
			e.Event, e.Status, e.Reply = events.Bounced, bouncedComplaint, "feedback-type fraud"
		},
		func(e *events.Event) { e.Event, e.FeedbackType = events.Complaint, "Abuse" },
		func(e *events.Event) { e.Event, e.FeedbackType = events.Complaint, "fraud" },
		func(e *events.Event) { e.Event, e.Reason = events.Rejected, suppressedReason+":x" },
		func(e *events.Event) { e.Event, e.Reason = events.Rejected, "other" },
		func(e *events.Event) { e.Event = events.Held },
	} {
		e := base
		f(&e)
		out = append(out, &e)
	}
	return out
}

// TestDecodeEventCountsAlike: the narrow decoding classifies every kind of
// event as decoding the whole Event does.
func TestDecodeEventCountsAlike(t *testing.T) {
	for i, e := range decodeSamples() {
		data, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		var full events.Event
		if err := json.Unmarshal(data, &full); err != nil {
			t.Fatal(err)
		}
		narrow, err := decodeEvent(data)
		if err != nil {
			t.Fatal(err)
		}
		wc, wok := classify(&full)
		gc, gok := classify(&narrow)
		if gc != wc || gok != wok || !narrow.Time.Equal(full.Time) {
			t.Errorf("event %d (%s): got %+v %v %v, want %+v %v %v", i, data, gc, gok, narrow.Time, wc, wok, full.Time)
		}
	}
	if _, err := decodeEvent([]byte(`{"event":`)); err == nil {
		t.Error("a truncated event decoded")
	}
}

func BenchmarkDecodeEvent(b *testing.B) {
	data, err := json.Marshal(decodeSamples()[1])
	if err != nil {
		b.Fatal(err)
	}
	b.Run("whole", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var e events.Event
			if err := json.Unmarshal(data, &e); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("counted", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := decodeEvent(data); err != nil {
				b.Fatal(err)
			}
		}
	})
}
