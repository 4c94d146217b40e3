package safetext

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestJSON(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"clean", `{"a":"b é"}`, `{"a":"b é"}`},
		{"del", "{\"a\":\"x\x7fy\"}", `{"a":"x\u007fy"}`},
		{"c1 csi", "{\"a\":\"\u009b2J\"}", `{"a":"\u009b2J"}`},
		{"bidi", "{\"a\":\"\u202e\"}", `{"a":"\u202e"}`},
		{"invalid utf-8", "{\"a\":\"\xff\"}", `{"a":"\ufffd"}`},
		{"indent kept", "{\n\t\"a\": 1\n}", "{\n\t\"a\": 1\n}"},
		{"cr escaped", "{\"a\":1}\r", `{"a":1}\u000d`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := string(JSON([]byte(tc.in)))
			if got != tc.want {
				t.Fatalf("JSON(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestJSONKeepsValue(t *testing.T) {
	in := map[string]string{"reply": "550 \x1b[2J\r\nbad\u009b\u2028\u202e\x7f"}
	raw, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	out := JSON(raw)
	var back map[string]string
	if err := json.Unmarshal(out, &back); err != nil {
		t.Fatalf("escaped JSON %s does not decode: %v", out, err)
	}
	if back["reply"] != in["reply"] {
		t.Fatalf("value changed: %q -> %q", in["reply"], back["reply"])
	}
	checkSafe(t, string(raw), string(out), false, 0)
}

func FuzzJSON(f *testing.F) {
	f.Add([]byte(`{"a":"b"}`))
	f.Add([]byte("{\"a\":\"\x1b\u009b\xff\"}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		out := JSON(b)
		checkSafe(t, string(b), strings.ReplaceAll(string(out), "\t", " "), true, 0)
		var v, w any
		if json.Unmarshal(b, &v) == nil && utf8Valid(b) && !bytes.Contains(b, []byte("\r")) { // CR whitespace: see JSON
			if err := json.Unmarshal(out, &w); err != nil {
				t.Fatalf("valid JSON %q became invalid %q: %v", b, out, err)
			}
			if !reflect.DeepEqual(v, w) {
				t.Fatalf("value changed: %q -> %q", b, out)
			}
		}
	})
}

func utf8Valid(b []byte) bool { return utf8.Valid(b) }
