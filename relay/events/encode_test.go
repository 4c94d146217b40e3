package events

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// sampleEvents has every field set once, none set, and the strings and
// times encoding/json treats specially.
func sampleEvents() []*Event {
	t := time.Date(2026, 12, 7, 5, 50, 1, 123456789, time.UTC)
	next := t.Add(time.Minute).In(time.FixedZone("x", -(3*3600 + 30*60)))
	odd := "a\"b\\c<d>e&f\x00\x01\x1f\b\f\n\r\t\x7f\u2028\u2029\xff\xc3é 😀"
	full := &Event{Time: t, Event: Delivery, QueueID: "01ABC", MsgID: "<m@x>", ConnID: "c1", RemoteAddr: "127.0.0.1:1",
		User: "u", MailFrom: Str(""), Rcpt: "r@x.test", Rcpts: []string{"r@x.test", odd}, RcptCount: 3, Domain: "x.test", Size: 4096, MX: "mx.x.test",
		IP: "::1", Source: "s1", Port: 25, TLS: "TLS1.3", TLSPolicy: "dane", TLSFailure: "tlsa-invalid",
		TLSCipher: "TLS_AES_128_GCM_SHA256", TLSVerified: Bool(false), DKIM: "pass", Attempt: -2, Status: StatusDeferred,
		SMTPCode: 451, SMTPEnh: "4.7.1", Reply: odd, Reason: "r", DurationMS: 12, NextAttempt: &next, DSNID: "d",
		Actor: "op", Arrival: t.Add(-time.Second), Provider: "p", Rule: "r", Action: "a", Until: &t,
		Meta: map[string]string{"z": "1", "a<": odd, "": ""}, Tag: "t", FeedbackType: "abuse"}
	return []*Event{
		{},
		{Time: t, Event: Accepted, MailFrom: Str("a@b"), TLSVerified: Bool(true), Meta: map[string]string{}},
		{Time: t.Local(), Event: odd, User: odd, Rcpt: "\xed\xa0\x80", Meta: map[string]string{odd: odd}, Rcpts: []string{}},
		{Time: time.Date(0, 1, 1, 0, 0, 0, 0, time.FixedZone("", 23*3600+59*60))},
		full,
	}
}

// TestSampleSetsEveryField: the full sample sets every field of Event, so
// a field added to Event but not to Marshal fails TestMarshalMatchesJSON
// instead of being dropped from the stream without a word.
func TestSampleSetsEveryField(t *testing.T) {
	full := reflect.ValueOf(sampleEvents()[4]).Elem()
	for i := range full.NumField() {
		if full.Field(i).IsZero() {
			t.Errorf("the full sample event leaves %s unset: set it (and encode it in Marshal)", full.Type().Field(i).Name)
		}
	}
}

func TestMarshalMatchesJSON(t *testing.T) {
	for i, e := range sampleEvents() {
		want, werr := json.Marshal(e)
		got, err := Marshal(e)
		if err != nil || werr != nil || !bytes.Equal(got, want) {
			t.Errorf("event %d:\n got %s (%v)\nwant %s (%v)", i, got, err, want, werr)
		}
	}
}

// TestMarshalRefusesLikeJSON: times json.Marshal refuses are refused.
func TestMarshalRefusesLikeJSON(t *testing.T) {
	for _, tm := range []time.Time{
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 1, 1, 0, 0, 0, 0, time.FixedZone("", 24*3600)),
		time.Date(2026, 1, 1, 0, 0, 0, 0, time.FixedZone("", 3600+30)),
	} {
		for _, e := range []*Event{{Time: tm}, {Arrival: tm}, {NextAttempt: &tm}, {Until: &tm}} {
			want, werr := json.Marshal(e)
			got, err := Marshal(e)
			if (err == nil) != (werr == nil) || !bytes.Equal(got, want) {
				t.Errorf("%v: got %s (%v), want %s (%v)", tm, got, err, want, werr)
			}
		}
	}
}

func FuzzMarshal(f *testing.F) {
	f.Add("accepted", "<m@x>", "a\"<>&\u2028", "k", "v", int64(1), int64(-5), 2026)
	f.Add("", "", "\xff\x00", "", "", int64(0), int64(0), 10000)
	f.Fuzz(func(t *testing.T, kind, s1, s2, k, v string, n, ns int64, year int) {
		tm := time.Date(year%12000-1000, 1, 2, 3, 4, 5, int(ns%1e9), time.FixedZone("", int(n%(30*3600))))
		e := &Event{Time: tm, Event: kind, MsgID: s1, Reply: s2, MailFrom: &s1, Size: n, Port: int(ns),
			Arrival: tm, NextAttempt: &tm, Meta: map[string]string{k: v, s1: s2}, Tag: s2}
		want, werr := json.Marshal(e)
		got, err := Marshal(e)
		if (err == nil) != (werr == nil) || !bytes.Equal(got, want) {
			t.Fatalf("got %s (%v)\nwant %s (%v)", got, err, want, werr)
		}
	})
}

// BenchmarkMarshal encodes an accepted and a delivery event as the relay
// emits them for one message.
func BenchmarkMarshal(b *testing.B) {
	evs := benchEvents()
	for _, enc := range []struct {
		name string
		f    func(*Event) ([]byte, error)
	}{{"json", func(e *Event) ([]byte, error) { return json.Marshal(e) }}, {"events", Marshal}} {
		b.Run(enc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				for _, e := range evs {
					if _, err := enc.f(e); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

// benchEvents are an accepted and a delivery event as the 4 KiB load
// makes them.
func benchEvents() []*Event {
	t := time.Now().UTC()
	return []*Event{
		{Time: t, Event: Accepted, QueueID: "01KBZ3R6Q1XJ5F0E8H2K4M6N8P", MsgID: "<01KBZ3R6Q1XJ5F0E8H2K4M6N8P@relay.bench.test>",
			ConnID: "c8f2a", RemoteAddr: "127.0.0.1:53412", User: "bench", MailFrom: Str("bench@example.test"),
			RcptCount: 1, Size: 4460, TLS: "TLS1.3", DKIM: "none"},
		{Time: t, Event: Delivery, QueueID: "01KBZ3R6Q1XJ5F0E8H2K4M6N8P", MsgID: "<01KBZ3R6Q1XJ5F0E8H2K4M6N8P@relay.bench.test>",
			User: "bench", MailFrom: Str("bench@example.test"), Rcpt: "user17@example.test", Domain: "example.test",
			Size: 4460, MX: "127.0.0.1", IP: "127.0.0.1", Port: 40123, TLS: "none", TLSPolicy: "configured",
			Attempt: 1, Status: StatusDelivered, SMTPCode: 250, SMTPEnh: "2.0.0", Reply: "250 2.0.0 OK: queued",
			DurationMS: 3, Arrival: t},
	}
}
