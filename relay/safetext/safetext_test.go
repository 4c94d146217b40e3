package safetext

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestReply(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"clean", "550 5.1.1 no such user", "550 5.1.1 no such user"},
		{"multi-line kept", "250-mx.example\n250 SIZE 1000", "250-mx.example\n250 SIZE 1000"},
		{"escape sequence", "550 \x1b[2Jgone", `550 \x1b[2Jgone`},
		{"carriage return", "450 try\rlater", `450 try\rlater`},
		{"tab", "450\tx", `450\tx`},
		{"nul and del", "a\x00b\x7fc", `a\x00b\x7fc`},
		{"c1 control", "a\u009bb", `a\u009bb`},
		{"bidi override", "a\u202eb", `a\u202eb`},
		{"line separator", "a\u2028b", `a\u2028b`},
		{"invalid utf-8", "a\xffb\xc3", `a\xffb\xc3`},
		{"utf-8 kept", "550 Empfänger unbekannt ✉", "550 Empfänger unbekannt ✉"},
		{"empty", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Reply(tc.in); got != tc.want {
				t.Fatalf("Reply(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestTerminal(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"clean", "Subject: hello", "Subject: hello"},
		{"newline escaped", "a\nb", `a\nb`},
		{"crlf", "a\r\nb", `a\r\nb`},
		{"escape", "\x1b]0;title\x07", `\x1b]0;title\x07`},
		{"c1 csi", "\u009b2J", `\u009b2J`},
		{"invalid", "\x80", `\x80`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Terminal(tc.in); got != tc.want {
				t.Fatalf("Terminal(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestTerminalDoesNotTruncate(t *testing.T) {
	s := strings.Repeat("x", 3*MaxReply) + "\x1b"
	if got := Terminal(s); len(got) != len(s)+3 {
		t.Fatalf("len = %d, want %d", len(got), len(s)+3)
	}
}

func TestReplyTruncates(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
	}{
		{"ascii", strings.Repeat("a", 10*MaxReply)},
		{"multibyte", strings.Repeat("é", MaxReply)},
		{"escapes", strings.Repeat("\x1b", MaxReply)},
		{"mixed", strings.Repeat("ab\u009b€\xff", MaxReply)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Reply(tc.in)
			if !strings.HasSuffix(got, TruncatedMark) {
				t.Fatalf("no truncation mark: ...%q", got[max(0, len(got)-20):])
			}
			body := strings.TrimSuffix(got, TruncatedMark)
			if len(body) > MaxReply || len(body) < MaxReply-12 {
				t.Fatalf("kept %d bytes, want close to %d", len(body), MaxReply)
			}
			if !utf8.ValidString(got) {
				t.Fatal("invalid UTF-8")
			}
			if strings.HasSuffix(body, `\`) || strings.HasSuffix(body, `\x`) {
				t.Fatal("cut inside an escape")
			}
		})
	}
}

func TestReplyExactlyAtLimit(t *testing.T) {
	s := strings.Repeat("a", MaxReply)
	if got := Reply(s); got != s {
		t.Fatalf("a reply of exactly MaxReply bytes was changed (len %d)", len(got))
	}
}

func TestCleanInputDoesNotAllocate(t *testing.T) {
	s := "250-mx.example.net Hello\n250-PIPELINING\n250 SIZE 52428800 — grüße"
	if n := testing.AllocsPerRun(100, func() { _ = Reply(s) }); n != 0 {
		t.Fatalf("Reply allocated %v times", n)
	}
	line := "To: Bob <bob@example.com>"
	if n := testing.AllocsPerRun(100, func() { _ = Terminal(line) }); n != 0 {
		t.Fatalf("Terminal allocated %v times", n)
	}
}

// checkSafe fails when out contains a character that the functions promise
// to escape, is invalid UTF-8, or is too long.
func checkSafe(t *testing.T, in, out string, keepNewline bool, limit int) {
	t.Helper()
	if !utf8.ValidString(out) {
		t.Fatalf("invalid UTF-8 output for %q", in)
	}
	for _, r := range out {
		if r < 0x20 && !(keepNewline && r == '\n') || r == 0x7f || needsEscape(r) {
			t.Fatalf("output %q for %q contains %U", out, in, r)
		}
	}
	if limit > 0 && len(out) > limit+len(TruncatedMark) {
		t.Fatalf("output is %d bytes, limit %d", len(out), limit)
	}
}

func FuzzReply(f *testing.F) {
	for _, s := range []string{"", "250 ok", "550 \x1b[2J\r\n", "\xff\xfe", "\u009b\u202e\u2028",
		strings.Repeat("é\x01", 3000)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		checkSafe(t, s, Reply(s), true, MaxReply)
		term := Terminal(s)
		checkSafe(t, s, term, false, 0)
		if len(term) > 6*len(s) {
			t.Fatalf("Terminal grew %d bytes to %d", len(s), len(term))
		}
		if clean(s, false) && term != s {
			t.Fatalf("clean input changed: %q -> %q", s, term)
		}
	})
}
