package queue

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/relay/jsonwire"
)

const oddText = "a\"b\\c<d>e&f\x00\x01\x1f\b\f\n\r\t\x7f\u2028\u2029\xff\xc3é 😀"

// sampleEnvelopes: every field set once (fullEnvelope), the fewest, and
// the values encoding/json treats specially.
func sampleEnvelopes() []*Envelope {
	t := time.Date(2026, 12, 7, 5, 50, 1, 123456789, time.UTC)
	return []*Envelope{
		{},
		{ID: "01KBZ3R6Q1XJ5F0E8H2K4M6N8P", Domain: "example.test", Rcpts: []Recipient{}, Arrival: t},
		{ID: oddText, From: oddText, Domain: "\xed\xa0\x80", Rcpts: []Recipient{{Addr: oddText, Notify: []string{}}},
			Arrival: t.Local(), NextAt: t.In(time.FixedZone("x", -(3*3600 + 30*60))), Meta: map[string]string{},
			LastReply: Reply{Text: oddText}},
		{ID: "x", Domain: "d", Rcpts: []Recipient{{Addr: "a"}, {Addr: "b", ORCPT: "rfc822;b"}}, LastReply: Reply{MX: "mx"},
			Arrival: time.Date(0, 1, 1, 0, 0, 0, 0, time.FixedZone("", 23*3600+59*60))},
		fullEnvelope(),
	}
}

func fullEnvelope() *Envelope {
	t := time.Date(2026, 12, 7, 5, 50, 1, 123456789, time.UTC)
	return &Envelope{ID: "01KBZ3R6Q1XJ5F0E8H2K4M6N8P", MsgID: "<m@x>", From: "bounce@example.test", Domain: "example.test",
		Rcpts: []Recipient{{Addr: "a@example.test", Notify: []string{"SUCCESS", "DELAY"}, ORCPT: "rfc822;a@example.test"},
			{Addr: oddText}},
		User: "u", Arrival: t, Attempt: -3, NextAt: t.Add(time.Hour), Ret: "HDRS", EnvID: oddText, RequireTLS: true,
		SMTPUTF8: true, Body8Bit: true, Size: 1 << 40, Chunks: 7, IsDSN: true, DelayNotified: true,
		LastReply: Reply{Code: 451, Enh: "4.7.1", Text: oddText, MX: "mx.example.test"}, Held: true, Probe: true,
		Retried: t.Add(-time.Hour), Waiting: "shaping: connections (google)",
		Meta: map[string]string{"z": "1", "a<": oddText, "": ""}, Tag: "t", TLSReport: true}
}

// TestEnvelopeSampleSetsEveryField: a field added to Envelope, Recipient
// or Reply but not to the codec fails TestEnvelopeMarshalMatchesJSON
// instead of being dropped from the queue without a word.
func TestEnvelopeSampleSetsEveryField(t *testing.T) {
	full := fullEnvelope()
	for _, v := range []reflect.Value{reflect.ValueOf(full).Elem(), reflect.ValueOf(full.Rcpts[0]),
		reflect.ValueOf(full.LastReply)} {
		for i := range v.NumField() {
			if v.Field(i).IsZero() {
				t.Errorf("the full sample envelope leaves %s.%s unset: set it (and encode it in the codec)",
					v.Type().Name(), v.Type().Field(i).Name)
			}
		}
	}
}

func TestEnvelopeMarshalMatchesJSON(t *testing.T) {
	for i, e := range sampleEnvelopes() {
		want, werr := json.Marshal(e)
		got, err := e.Marshal()
		if err != nil || werr != nil || !bytes.Equal(got, want) {
			t.Errorf("envelope %d:\n got %s (%v)\nwant %s (%v)", i, got, err, want, werr)
		}
	}
	// Times json.Marshal refuses are refused.
	for _, tm := range []time.Time{time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 1, 1, 0, 0, 0, 0, time.FixedZone("", 24*3600))} {
		for _, e := range []*Envelope{{Arrival: tm}, {NextAt: tm}, {Retried: tm}} {
			_, werr := json.Marshal(e)
			if _, err := e.Marshal(); werr == nil || err == nil {
				t.Errorf("time %v: error %v, json.Marshal's %v", tm, err, werr)
			}
		}
	}
}

// checkEnvelopeDecode compares decodeEnvelope with json.Unmarshal on data.
func checkEnvelopeDecode(t *testing.T, data []byte) {
	t.Helper()
	var got, want Envelope
	err := decodeEnvelope(data, &got)
	werr := json.Unmarshal(data, &want)
	if (err == nil) != (werr == nil) {
		t.Fatalf("%q: error %v, encoding/json %v", data, err, werr)
	}
	if err == nil && !reflect.DeepEqual(got, want) {
		t.Fatalf("%q:\n got %+v\nwant %+v", data, got, want)
	}
}

// TestEnvelopeDecodeMatchesJSON: what Marshal writes is read by the
// codec's own reader (no fallback), as encoding/json reads it.
func TestEnvelopeDecodeMatchesJSON(t *testing.T) {
	for i, e := range sampleEnvelopes() {
		data, err := e.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		checkEnvelopeDecode(t, data)
		d := envReader{Reader: jsonwire.NewReader(data)}
		if !d.envelope(&Envelope{}) {
			t.Errorf("envelope %d: Marshal's output fell back to encoding/json: %s", i, data)
		}
	}
}

var oddEnvelopes = []string{
	``, `null`, `{}`, `[]`, `{"id":"x"} x`, `{"id":"x",}`, `{"ID":"x"}`, `{"id":"a","id":"b"}`, `{"id":null}`,
	`{"rcpts":null}`, `{"rcpts":[null]}`, `{"rcpts":[{"addr":"a","addr":"b"}]}`, `{"rcpts":[{"Addr":"a"}]}`,
	`{"rcpts":[{"addr":"a","notify":null}]}`, `{"rcpts":[{"addr":"a","notify":["X",1]}]}`, `{"rcpts":[{}]}`,
	`{"rcpts":[{"addr":"a"},]}`, `{"rcpts":[{"addr":"a"} {"addr":"b"}]}`, `{"rcpts":[{"addr":"a","x":1}]}`,
	`{"size":1.0}`, `{"size":1e3}`, `{"size":-0}`, `{"size":01}`, `{"size":"1"}`, `{"size":99999999999999999999}`,
	`{"attempt":9223372036854775807}`, `{"chunks":-1}`, `{"held":1}`, `{"held":null}`, `{"held":true,"held":false}`,
	`{"last_reply":null}`, `{"last_reply":{}}`, `{"last_reply":{"code":"451"}}`, `{"last_reply":{"code":451,"code":1}}`,
	`{"last_reply":{"text":"a"},"last_reply":{"mx":"b"}}`, `{"last_reply":{"x":1}}`, `{"last_reply":[]}`,
	`{"arrival":"2026-12-07"}`, `{"arrival":null}`, `{"next_at":"0001-01-01T00:00:00Z"}`, `{"retried":"bad"}`,
	`{"meta":{"a":"1","a":"2"}}`, `{"meta":{"a":1}}`, `{"meta":null}`, `{"meta":{"\u0061":"x","a":"y"}}`,
	`{"id":"\ud800\udc00\ud800x\u00e9"}`, `{"id":"\x"}`, "{\"id\":\"a\x01\"}", "{\"id\":\"\xff\"}",
	`{"unknown":{"a":[1,{"b":null}]},"id":"x"}`, "{\n \"id\" : \"x\" ,\t\"domain\":\"d\" }\r\n", `{"id":"x"}{}`,
}

func TestEnvelopeDecodeOddDocuments(t *testing.T) {
	for _, doc := range oddEnvelopes {
		checkEnvelopeDecode(t, []byte(doc))
	}
}

func FuzzEnvelopeCodec(f *testing.F) {
	for _, e := range sampleEnvelopes() {
		data, err := e.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, doc := range oddEnvelopes {
		f.Add([]byte(doc))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkEnvelopeDecode(t, data)
		var e Envelope
		if decodeEnvelope(data, &e) != nil {
			return
		}
		want, werr := json.Marshal(&e)
		got, err := e.Marshal()
		if (err == nil) != (werr == nil) || !bytes.Equal(got, want) {
			t.Fatalf("re-encoding %q:\n got %s (%v)\nwant %s (%v)", data, got, err, want, werr)
		}
	})
}
