package submit

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzParseMailbox: never panics; an accepted address has no control
// characters, is ASCII unless SMTPUTF8, and renders to something that
// parses back to itself.
func FuzzParseMailbox(f *testing.F) {
	for _, s := range []string{
		"a@example.com", "a b@x.test", "x@[127.0.0.1]", "x@[IPv6:::1]", "j\xc3\xb6rg@b\xc3\xbccher.test", "a\x00@x", "@", "",
	} {
		f.Add(s, true)
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, addr string, utf8OK bool) {
		m, err := parseMailbox(addr, utf8OK)
		if err != nil {
			return
		}
		out := m.String()
		if strings.ContainsFunc(out, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			t.Fatalf("control character accepted: %q", out)
		}
		if !utf8OK && strings.ContainsFunc(out, func(r rune) bool { return r >= utf8.RuneSelf }) {
			t.Fatalf("8-bit accepted without SMTPUTF8: %q", out)
		}
		if m.Domain != strings.ToLower(m.Domain) {
			t.Fatalf("domain not lowercased: %q", m.Domain)
		}
	})
}

// FuzzValidHelo: a valid EHLO argument is safe to put into a header as is.
func FuzzValidHelo(f *testing.F) {
	for _, s := range []string{"client.test", "[127.0.0.1]", "[IPv6:::1]", "bad!name", "a\r\nb", "x(y)"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if validHelo(s) && strings.ContainsAny(s, "\x00\r\n ();\\\"") {
			t.Fatalf("unsafe EHLO argument accepted: %q", s)
		}
		if got := sanitize(s, 255); strings.ContainsAny(got, "\r\n()\\;") {
			t.Fatalf("sanitize(%q) = %q", s, got)
		}
	})
}

// FuzzMessage: the normaliser never panics and its output has only CRLF
// line endings and no NUL; the header scanner and the From: parser never
// panic on it, and a Received: field built from any text stays one field.
func FuzzMessage(f *testing.F) {
	for _, s := range []string{
		"From: a@example.com\r\n\r\nbody\r\n", "From: a@example.com\nbare\rcr", "\x00", "\r\r\n\n",
		"From: \"x\" <a@b>, =?utf-8?q?=C3=BC?= <c@d>\r\n\tcont\r\n\r\n", " lead\r\n", "A:\r\n",
	} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, msg []byte, reject bool) {
		out, err := normalize(msg, reject, 1000)
		if err != nil {
			return
		}
		for i, c := range out {
			if c == 0 || c == '\n' && (i == 0 || out[i-1] != '\r') || c == '\r' && (i+1 >= len(out) || out[i+1] != '\n') {
				t.Fatalf("bad byte %q at %d in %q", c, i, out)
			}
		}
		if h, err := scanHeader(out, 1<<20); err == nil {
			_, _ = fromAddresses(h)
		}
		r := received(stamp{
			Helo: string(msg), IP: "127.0.0.1", Host: "h", User: string(msg), ID: "ID", Time: time.Unix(0, 0),
		})
		if bytes.Count([]byte(r), []byte("\r\n")) != bytes.Count([]byte(r), []byte("\r\n\t"))+1 {
			t.Fatalf("Received: field broken by input: %q", r)
		}
	})
}

// FuzzNormalizeFastPath: normalize's line-at-a-time shortcut answers
// exactly like the byte loop.
func FuzzNormalizeFastPath(f *testing.F) {
	for _, s := range []string{
		"", "a\r\n", "a\r\nb", "a\nb\r\n", "a\rb\r\n", "x\x00\r\n", "0123456789A\r\n", "\r\n.\r\n",
	} {
		f.Add([]byte(s), false)
	}
	f.Fuzz(func(t *testing.T, msg []byte, reject bool) {
		got, gerr := normalize(msg, reject, 10)
		want, werr := normalizeLoop(msg, reject, 10)
		if !bytes.Equal(got, want) || !errors.Is(gerr, werr) && gerr != werr {
			t.Fatalf("normalize(%q) = %q, %v; loop: %q, %v", msg, got, gerr, want, werr)
		}
	})
}

// FuzzLongLines: the long-line fixer and its MIME walker never panic; what
// they return has no line over 998 octets, stays CRLF-canonical, is at
// most a bounded factor larger, and a message without a long line comes
// back unchanged. In the input, \x01 stands for 1,000 octets without
// whitespace and \x02 for 1,000 octets of words, so that the fuzzer reaches
// long lines cheaply.
func FuzzLongLines(f *testing.F) {
	for _, s := range []string{
		"From: a@example.com\r\n\r\n\x01\r\n",
		"Subject: \x02\r\n\r\nhi\r\n",
		"Subject: \x01\r\n\r\nhi\r\n",
		"Content-Type: text/html\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\x02=\r\n",
		"Content-Transfer-Encoding: base64\r\n\r\n\x01\r\n",
		"Content-Type: multipart/mixed; boundary=b\r\n\r\npre\r\n--b\r\n\r\nshort\r\n" +
			"--b\r\nContent-Type: text/html\r\n\r\n\x02\r\n--b--\r\nepi\r\n",
		"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: multipart/alternative; boundary=c\r\n\r\n" +
			"--c\r\n\r\n\x01\r\n--c--\r\n--b--\r\n",
		"Content-Type: multipart/signed; boundary=s\r\n\r\n--s\r\n\r\n\x01\r\n--s--\r\n",
		"Content-Type: message/rfc822\r\n\r\nSubject: \x02\r\n\r\n\x01\r\n",
		"\r\n\x01\r\n",
	} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, in []byte, reject bool) {
		if len(in) > 64<<10 {
			return
		}
		in = bytes.ReplaceAll(in, []byte{1}, bytes.Repeat([]byte("x"), 1000))
		in = bytes.ReplaceAll(in, []byte{2}, bytes.Repeat([]byte("wd "), 334))
		msg, err := normalize(in, false, 0)
		if err != nil {
			return
		}
		out, err := fixLongLines(msg, reject)
		if err != nil {
			return
		}
		if hasLongLine(out) {
			t.Fatalf("a line over 998 octets in the output")
		}
		if ok, _ := canonical(out, 0); !ok && len(out) > 0 {
			t.Fatalf("output not CRLF-canonical: %q", out[:min(len(out), 200)])
		}
		if len(out) > 4*len(msg)+1024 {
			t.Fatalf("output %d octets for %d in", len(out), len(msg))
		}
		if !hasLongLine(msg) && !bytes.Equal(out, msg) {
			t.Fatalf("message without long lines changed")
		}
	})
}
