package tlsrpt

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/relay/events"
)

// TestDecodeEventSessionsAlike: the narrow decoding gives every kind of
// delivery event the session that decoding the whole Event gives.
func TestDecodeEventSessionsAlike(t *testing.T) {
	base := events.Event{Time: time.Date(2026, 12, 7, 23, 59, 59, 9, time.UTC), Event: events.Delivery, QueueID: "q",
		MsgID: "<m@x>", User: "u", MailFrom: events.Str("a@b"), Rcpt: "r@x.test", Domain: "X.Test.", MX: "MX.x.test.",
		IP: "192.0.2.1", Source: "s1", Meta: map[string]string{"k": "v"}, Arrival: time.Now()}
	for i, f := range []func(e *events.Event){
		func(e *events.Event) { e.TLS, e.TLSPolicy = "TLS1.3", "dane" },
		func(e *events.Event) { e.TLS, e.TLSPolicy = "TLS1.2", "mta-sts" },
		func(e *events.Event) {
			e.TLS, e.TLSPolicy, e.TLSFailure = "failed", "mta-sts-testing", "certificate-expired"
		},
		func(e *events.Event) { e.TLS, e.TLSPolicy, e.TLSFailure = "none", "dane", "starttls-not-supported" },
		func(e *events.Event) { e.TLS = "none" },
		func(e *events.Event) { e.TLS, e.Domain = "TLS1.3", "" },
		func(e *events.Event) { e.TLS, e.Event = "TLS1.3", events.Accepted },
	} {
		e := base
		f(&e)
		data, err := json.Marshal(&e)
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
		ws, wok := sessionOf(&full)
		gs, gok := sessionOf(&narrow)
		if gok != wok || gs.day != ws.day || gs.domain != ws.domain || gs.typ != ws.typ || gs.mx != ws.mx ||
			gs.ok != ws.ok || gs.failure != ws.failure || narrow.Source != full.Source {
			t.Errorf("event %d: got %+v %v, want %+v %v", i, gs, gok, ws, wok)
		}
	}
	if _, err := decodeEvent([]byte(`{"time":"x"}`)); err == nil {
		t.Error("a bad time decoded")
	}
}
