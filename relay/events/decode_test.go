package events

import (
	"encoding/json"
	"reflect"
	"testing"
)

// jsonDecode is what Decode must return: json.Unmarshal into an Event,
// restricted to want.
func jsonDecode(data []byte, want FieldMask) (Event, error) {
	var e Event
	err := json.Unmarshal(data, &e)
	e.keep(want)
	return e, err
}

// checkDecode compares Decode with encoding/json on data.
func checkDecode(t *testing.T, data []byte, want FieldMask) {
	t.Helper()
	var got Event
	err := Decode(data, &got, want)
	exp, werr := jsonDecode(data, want)
	if (err == nil) != (werr == nil) {
		t.Fatalf("%q (fields %#x): error %v, encoding/json %v", data, want, err, werr)
	}
	if err == nil && !reflect.DeepEqual(got, exp) {
		t.Fatalf("%q (fields %#x):\n got %+v\nwant %+v", data, want, got, exp)
	}
}

// statsFields and sessionFields are what the stats and TLS-RPT counters take.
const (
	statsFields = FTime | FEvent | FUser | FRcpt | FRcpts | FRcptCount | FDomain | FStatus | FSMTPCode |
		FSMTPEnh | FReply | FReason | FFeedbackType
	sessionFields = FTime | FEvent | FDomain | FMX | FIP | FSource | FTLS | FTLSPolicy | FTLSFailure
)

// TestDecodeMatchesJSON: what Marshal writes is read by Decode's own
// reader (no fallback), as encoding/json reads it, whatever the fields
// asked for.
func TestDecodeMatchesJSON(t *testing.T) {
	for i, e := range sampleEvents() {
		data, err := Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []FieldMask{AllFields, statsFields, sessionFields, 0, FMeta | FRcpts | FMailFrom} {
			checkDecode(t, data, want)
			var got Event
			if !decodeFast(data, &got, want) {
				t.Errorf("event %d (fields %#x): Marshal's output fell back to encoding/json: %s", i, want, data)
			}
		}
	}
}

// TestDecodeFieldBits: bit i is Event's field i (and the reader knows its
// JSON name): with one bit asked for, only that field is set.
func TestDecodeFieldBits(t *testing.T) {
	full := sampleEvents()[4]
	data, err := Marshal(full)
	if err != nil {
		t.Fatal(err)
	}
	typ := reflect.TypeOf(Event{})
	if n := typ.NumField(); FieldMask(1)<<n != fieldsEnd {
		t.Fatalf("Event has %d fields, FieldMask has bits for %d: add the new field's bit, its case in decoder.field and in keep",
			n, countBits(AllFields))
	}
	for i := range typ.NumField() {
		var got Event
		if !decodeFast(data, &got, FieldMask(1)<<i) {
			t.Fatalf("field %s: fell back to encoding/json", typ.Field(i).Name)
		}
		v := reflect.ValueOf(got)
		for j := range typ.NumField() {
			if set := !v.Field(j).IsZero(); set != (i == j) {
				t.Errorf("bit %d (%s): field %s set=%v", i, typ.Field(i).Name, typ.Field(j).Name, set)
			}
		}
		checkDecode(t, data, FieldMask(1)<<i)
	}
}

func countBits(f FieldMask) int {
	n := 0
	for ; f != 0; f &= f - 1 {
		n++
	}
	return n
}

// oddDocuments are JSON (and not JSON) outside Marshal's shape.
var oddDocuments = []string{
	``, `null`, `{}`, ` { } `, `[]`, `{"event":"x"} x`, `{"event":"x",}`, `{"event" "x"}`, `{"event":"x"`,
	`{"Event":"upper case key"}`, `{"EVENT":"x","event":"y"}`, `{"event":"a","event":"b"}`,
	`{"event":null}`, `{"mail_from":null}`, `{"rcpts":null}`, `{"meta":null}`, `{"time":null}`,
	`{"unknown":1,"event":"x"}`, `{"unknown":{"a":[1,2,{"b":null}]},"event":"x"}`,
	`{"smtp_code":250.0}`, `{"smtp_code":2.5e2}`, `{"smtp_code":-0}`, `{"smtp_code":01}`, `{"smtp_code":-}`,
	`{"smtp_code":99999999999999999999}`, `{"smtp_code":"250"}`, `{"size":-9223372036854775808}`,
	`{"port":1e2}`, `{"attempt":true}`, `{"tls_verified":"true"}`, `{"tls_verified":1}`, `{"tls_verified":tru}`,
	`{"event":"\u00e9\ud83d\ude00\ud800\udc00\ud800x\udc00\u0000"}`, `{"event":"\ud800\ud800"}`,
	`{"event":"\x"}`, `{"event":"\u12"}`, `{"event":"\u12g4"}`, "{\"event\":\"a\x01b\"}", "{\"event\":\"\xff\xfe\"}",
	"{\"event\":\"\xed\xa0\x80\"}", `{"event":"\/\b\f\n\r\t\\\""}`, `{"event":"tab	raw"}`,
	`{"time":"2026-12-07T05:50:01Z"}`, `{"time":"2026-12-07T05:50:01.5+01:00"}`, `{"time":"2026-12-07"}`,
	`{"time":"2026-12-07T05:50:01\u005a"}`, `{"time":1}`, `{"until":"2026-12-07T05:50:01Z","next_attempt":"bad"}`,
	`{"arrival":"0001-01-01T00:00:00Z"}`, `{"rcpts":[]}`, `{"rcpts":["a",1]}`, `{"rcpts":["a",]}`, `{"rcpts":["a" "b"]}`,
	`{"meta":{}}`, `{"meta":{"a":1}}`, `{"meta":{"a":"1","a":"2"}}`, `{"meta":{"\u0061":"x"}}`, `{"meta":{"a":"1",}}`,
	`{"meta":{"a":"b"},"meta":{"c":"d"}}`, `{"rcpts":["a"],"rcpts":["b","c"]}`,
	"{\n\t\"event\" : \"x\" ,\r\n \"rcpt_count\" : 3 }\n", `{"event":"x"}{}`, `{"event":"x"}]`,
}

func TestDecodeOddDocuments(t *testing.T) {
	for _, doc := range oddDocuments {
		for _, want := range []FieldMask{AllFields, statsFields, 0} {
			checkDecode(t, []byte(doc), want)
		}
	}
}

func FuzzDecode(f *testing.F) {
	for _, e := range sampleEvents() {
		data, err := Marshal(e)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, uint64(AllFields))
		f.Add(data, uint64(statsFields))
	}
	for _, doc := range oddDocuments {
		f.Add([]byte(doc), uint64(AllFields))
	}
	f.Fuzz(func(t *testing.T, data []byte, want uint64) {
		checkDecode(t, data, FieldMask(want)&AllFields)
	})
}

// BenchmarkDecode: an accepted and a delivery event, as the stats
// counter, the TLS-RPT counter and a reader of whole events take them,
// and encoding/json into the whole Event for comparison.
func BenchmarkDecode(b *testing.B) {
	var docs [][]byte
	for _, e := range benchEvents() {
		data, err := Marshal(e)
		if err != nil {
			b.Fatal(err)
		}
		docs = append(docs, data)
	}
	for _, c := range []struct {
		name string
		want FieldMask
	}{{"stats", statsFields}, {"tlsrpt", sessionFields}, {"all", AllFields}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			var e Event
			for i := 0; i < b.N; i++ {
				if err := Decode(docs[i%len(docs)], &e, c.want); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			var e Event
			if err := json.Unmarshal(docs[i%len(docs)], &e); err != nil {
				b.Fatal(err)
			}
		}
	})
}
