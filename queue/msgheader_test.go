package queue

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseMessageHeader(t *testing.T) {
	t.Parallel()
	long := "X-Long: " + strings.Repeat("a", MaxHeaderSection) + "\r\n"
	cases := []struct {
		name string
		msg  string
		want MessageHeader
	}{
		{"plain", "From: a@example.com\r\nSubject: hi\r\n\r\nbody: not a field\r\n",
			MessageHeader{Fields: []HeaderField{{"From", "a@example.com"}, {"Subject", "hi"}}}},
		{"folded and bare LF", "Subject: one\n two\nTo: b@example.net\n\nbody\n",
			MessageHeader{Fields: []HeaderField{{"Subject", "one two"}, {"To", "b@example.net"}}}},
		{"encoded-words",
			"Subject: =?UTF-8?B?R3LDvMOfZQ==?= =?ISO-8859-1?Q?caf=E9?=\r\nFrom: =?utf-8?q?J=C3=B6rg?= <j@example.com>\r\n\r\n",
			MessageHeader{Fields: []HeaderField{{"Subject", "Grüßecafé"}, {"From", "Jörg <j@example.com>"}}}},
		{"unknown charset shown as it is", "Subject: =?x-unknown?Q?abc?=\r\n\r\n",
			MessageHeader{Fields: []HeaderField{{"Subject", "=?x-unknown?Q?abc?="}}}},
		{"control characters escaped, also when encoded",
			"Subject: a\x1b[31mred =?UTF-8?Q?=1B]0;x=07?=\r\nX-Bad: \xff\r\n\r\n",
			MessageHeader{Fields: []HeaderField{{"Subject", `a\x1b[31mred \x1b]0;x\x07`}, {"X-Bad", `\xff`}}}},
		{"malformed line kept", "not a field\r\nTo: b@example.net\r\n\r\n",
			MessageHeader{Fields: []HeaderField{{"", "not a field"}, {"To", "b@example.net"}}}},
		{"no header", "\r\nbody\r\n", MessageHeader{}},
		{"no body", "Subject: only\r\nTo: x", MessageHeader{Fields: []HeaderField{{"Subject", "only"}, {"To", "x"}}}},
		{"too long", "Subject: s\r\n" + long + "To: x\r\n\r\n",
			MessageHeader{Fields: []HeaderField{{"Subject", "s"}}, Truncated: true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := ParseMessageHeader([]byte(tc.msg))
			if diff := cmp.Diff(tc.want, got, cmpEmpty); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// cmpEmpty treats nil and empty field lists alike.
var cmpEmpty = cmp.Comparer(func(a, b []HeaderField) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
})

// FuzzParseMessageHeader: any bytes parse without a panic into fields a
// terminal can print (no control characters but tab).
func FuzzParseMessageHeader(f *testing.F) {
	f.Add([]byte("From: a@example.com\r\nSubject: =?UTF-8?B?R3LDvMOfZQ==?=\r\n\r\nbody"))
	f.Add([]byte("Subject: a\x1b[2J\n\tb\n\n"))
	f.Add([]byte("=?utf-8?q?=0D=0A?=: x\r\n"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		for _, fl := range ParseMessageHeader(msg).Fields {
			for _, s := range []string{fl.Name, fl.Value} {
				if strings.ContainsFunc(s, func(r rune) bool { return (r < 0x20 && r != '\t') || (r >= 0x7f && r < 0xa0) }) {
					t.Fatalf("control character left in %q", s)
				}
			}
		}
	})
}
