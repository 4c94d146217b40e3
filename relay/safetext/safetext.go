// Package safetext makes text that came from outside safe to store, log,
// event, put into a DSN or print on an operator's terminal. Remote SMTP
// replies, addresses, subjects and headers are chosen by strangers; raw, they
// carry terminal escape sequences (ESC [2J), carriage returns that overwrite
// what a log viewer shows, invalid UTF-8 and megabytes of text (issue 12
// point 1).
//
// Both functions escape, never drop: a C0 control, DEL or an invalid UTF-8
// byte becomes \xNN, a C1 control (U+0080–U+009F) becomes \u00NN, a Unicode
// bidirectional control or line/paragraph separator becomes \uNNNN, and
// CR, LF and TAB become \r, \n and \t. Backslashes are not escaped: the
// output is for people, not meant to be decoded again. The output is always
// valid UTF-8. Text that needs no escaping (and is within the length limit)
// is returned unchanged without allocating. JSON does the same for a JSON
// document printed as it is (logs --json), with \u escapes that keep it valid.
package safetext

import (
	"strings"
	"unicode/utf8"
)

// MaxReply is the most bytes Reply returns before TruncatedMark.
const MaxReply = 4096

// TruncatedMark ends a Reply result that was cut.
const TruncatedMark = "…[truncated]"

// Reply returns what jetrelay keeps of a remote server's reply text: control
// characters escaped except '\n', which separates the lines of a multi-line
// reply, and at most MaxReply bytes of escaped text, cut on a character
// boundary (never inside an escape) and followed by TruncatedMark when cut.
func Reply(s string) string {
	if len(s) <= MaxReply && clean(s, true) {
		return s
	}
	return escape(s, escapeOptions{keepNewline: true, limit: MaxReply})
}

// Terminal returns s with every control character escaped, newlines too, so
// that one field prints as one line and cannot move the cursor, clear the
// screen or change colours. It does not shorten s.
func Terminal(s string) string {
	if clean(s, false) {
		return s
	}
	return escape(s, escapeOptions{})
}

type escapeOptions struct {
	keepNewline bool
	limit       int // bytes of output before the mark; 0 = no limit
}

// clean reports whether s is valid UTF-8 without anything to escape.
func clean(s string, keepNewline bool) bool {
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if (b < 0x20 || b == 0x7f) && !(keepNewline && b == '\n') {
				return false
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 || needsEscape(r) {
			return false
		}
		i += size
	}
	return true
}

// needsEscape reports whether a non-ASCII rune must be escaped: C1
// controls, bidirectional controls (they reorder what a terminal shows) and
// the Unicode line and paragraph separators.
func needsEscape(r rune) bool {
	switch {
	case r >= 0x80 && r <= 0x9f:
		return true
	case r == 0x061c, r == 0x200e, r == 0x200f,
		r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
		return true
	case r == 0x2028, r == 0x2029:
		return true
	}
	return false
}

const hexDigits = "0123456789abcdef"

func escape(s string, o escapeOptions) string {
	var b strings.Builder
	n := len(s)
	if o.limit > 0 && n > o.limit {
		n = o.limit
	}
	b.Grow(n + n/8 + len(TruncatedMark))
	var piece [12]byte
	for i := 0; i < len(s); {
		p, size := escapeOne(piece[:0], s[i:], o.keepNewline)
		if o.limit > 0 && b.Len()+len(p) > o.limit {
			b.WriteString(TruncatedMark)
			break
		}
		b.Write(p)
		i += size
	}
	return b.String()
}

// escapeOne appends the safe form of the first character of s to dst and
// returns it with the number of input bytes consumed.
func escapeOne(dst []byte, s string, keepNewline bool) ([]byte, int) {
	c := s[0]
	if c < utf8.RuneSelf {
		switch {
		case c == '\n' && keepNewline:
			return append(dst, c), 1
		case c == '\n':
			return append(dst, '\\', 'n'), 1
		case c == '\r':
			return append(dst, '\\', 'r'), 1
		case c == '\t':
			return append(dst, '\\', 't'), 1
		case c < 0x20 || c == 0x7f:
			return append(dst, '\\', 'x', hexDigits[c>>4], hexDigits[c&0xf]), 1
		}
		return append(dst, c), 1
	}
	r, size := utf8.DecodeRuneInString(s)
	if r == utf8.RuneError && size == 1 {
		return append(dst, '\\', 'x', hexDigits[c>>4], hexDigits[c&0xf]), 1
	}
	if needsEscape(r) {
		dst = append(dst, '\\', 'u')
		for shift := 12; shift >= 0; shift -= 4 {
			dst = append(dst, hexDigits[(r>>shift)&0xf])
		}
		return dst, size
	}
	return append(dst, s[:size]...), size
}
