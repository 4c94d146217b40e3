package jsonwire

import (
	"encoding/json"
	"testing"
	"time"
)

var strs = []string{"", "plain", "a\"b\\c<d>e&f\x00\x01\x1f\b\f\n\r\t\x7f", "\u2028\u2029", "\xff\xc3é 😀", "\xed\xa0\x80"}

// TestStringsRoundTrip: AppendString writes json.Marshal's bytes, and
// RawString+Unquote read them (and other escapes) as json.Unmarshal does.
func TestStringsRoundTrip(t *testing.T) {
	for _, s := range strs {
		want, _ := json.Marshal(s)
		got := AppendString(nil, s)
		if string(got) != string(want) {
			t.Errorf("AppendString(%q) = %s, json.Marshal %s", s, got, want)
		}
	}
	for _, doc := range []string{`"\u00e9\ud83d\ude00"`, `"\ud800x"`, `"\ud800\ud800"`, `"\/\b\f\n\r\t"`, "\"\xff\"",
		`"\u0041\u004A"`, `"x"`} {
		var want string
		if err := json.Unmarshal([]byte(doc), &want); err != nil {
			t.Fatal(err)
		}
		r := NewReader([]byte(doc))
		raw, esc, ok := r.RawString()
		if !ok || !r.End() {
			t.Fatalf("%s: not read", doc)
		}
		if got := Unquote(raw, esc); got != want {
			t.Errorf("%s: %q, json.Unmarshal %q", doc, got, want)
		}
	}
	for _, bad := range []string{`"`, `"\x"`, `"\u12"`, "\"a\x01\"", `x`, `"\`} {
		r := NewReader([]byte(bad))
		if _, _, ok := r.RawString(); ok {
			t.Errorf("%q read as a string", bad)
		}
	}
}

func TestIntAndTime(t *testing.T) {
	for doc, want := range map[string]int64{"0": 0, "-0": 0, " 42": 42, "-9223372036854775808": -1 << 63} {
		r := NewReader([]byte(doc))
		if v, ok := r.Int(); !ok || v != want || !r.End() {
			t.Errorf("Int(%q) = %d, %v", doc, v, ok)
		}
	}
	for _, doc := range []string{"", "-", "01", "1.0", "1e3", "9223372036854775808", "x"} {
		r := NewReader([]byte(doc))
		if _, ok := r.Int(); ok {
			t.Errorf("Int(%q) read", doc)
		}
	}
	tm := time.Date(2026, 12, 7, 5, 50, 1, 5, time.FixedZone("", 3600))
	b, err := AppendTime(nil, tm)
	want, _ := json.Marshal(tm)
	if err != nil || string(b) != string(want) {
		t.Fatalf("AppendTime %s (%v), json.Marshal %s", b, err, want)
	}
	var got time.Time
	if r := NewReader(b); !r.Time(&got) || !got.Equal(tm) {
		t.Fatalf("Time(%s) = %v", b, got)
	}
	if _, err := AppendTime(nil, time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)); err != ErrTimeRange {
		t.Fatalf("year 10000: %v", err)
	}
}
