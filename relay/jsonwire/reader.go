package jsonwire

import (
	"strconv"
	"time"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// Reader reads one JSON document front to back. Every method skips the
// white space before its token; false means "not there" (the position is
// then unspecified: the caller gives up on the document).
type Reader struct {
	b []byte
	i int
}

// NewReader reads b.
func NewReader(b []byte) Reader { return Reader{b: b} }

func (r *Reader) ws() {
	for r.i < len(r.b) {
		switch r.b[r.i] {
		case ' ', '\t', '\n', '\r':
			r.i++
		default:
			return
		}
	}
}

// Byte consumes c.
func (r *Reader) Byte(c byte) bool {
	r.ws()
	if r.i < len(r.b) && r.b[r.i] == c {
		r.i++
		return true
	}
	return false
}

// End says whether only white space is left.
func (r *Reader) End() bool {
	r.ws()
	return r.i == len(r.b)
}

// Literal consumes s (true, false, null).
func (r *Reader) Literal(s string) bool {
	r.ws()
	if len(r.b)-r.i >= len(s) && string(r.b[r.i:r.i+len(s)]) == s {
		r.i += len(s)
		return true
	}
	return false
}

// Bool reads true or false.
func (r *Reader) Bool() (v, ok bool) {
	switch {
	case r.Literal("true"):
		return true, true
	case r.Literal("false"):
		return false, true
	}
	return false, false
}

// Int reads a plain JSON integer (no fraction or exponent) that fits 64
// bits; anything else (which encoding/json may still take, or refuse) is
// false.
func (r *Reader) Int() (int64, bool) {
	r.ws()
	start := r.i
	if r.i < len(r.b) && r.b[r.i] == '-' {
		r.i++
	}
	digits := r.i
	for r.i < len(r.b) && r.b[r.i] >= '0' && r.b[r.i] <= '9' {
		r.i++
	}
	n := r.i - digits
	if n == 0 || (n > 1 && r.b[digits] == '0') {
		return 0, false
	}
	if r.i < len(r.b) {
		switch r.b[r.i] {
		case '.', 'e', 'E':
			return 0, false
		}
	}
	v, err := strconv.ParseInt(string(r.b[start:r.i]), 10, 64)
	return v, err == nil
}

// Time reads a time as encoding/json does: the quoted token goes to
// time.Time's UnmarshalJSON.
func (r *Reader) Time(t *time.Time) bool {
	r.ws()
	start := r.i
	if _, _, ok := r.RawString(); !ok {
		return false
	}
	return t.UnmarshalJSON(r.b[start:r.i]) == nil
}

// String reads a string; its value is stored in dst only when store (a
// string not stored costs no allocation).
func (r *Reader) String(store bool, dst *string) bool {
	raw, esc, ok := r.RawString()
	if ok && store {
		*dst = Unquote(raw, esc)
	}
	return ok
}

// RawString reads a JSON string, returning its bytes between the quotes
// and whether they may need Unquote's work (an escape or a byte outside
// ASCII); false on anything JSON's grammar refuses in a string (a control
// character, a bad escape, no end).
func (r *Reader) RawString() (raw []byte, esc, ok bool) {
	if !r.Byte('"') {
		return nil, false, false
	}
	start := r.i
	for r.i < len(r.b) {
		c := r.b[r.i]
		switch {
		case c == '"':
			raw = r.b[start:r.i]
			r.i++
			return raw, esc, true
		case c == '\\':
			esc = true
			if r.i+1 >= len(r.b) {
				return nil, false, false
			}
			switch r.b[r.i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				r.i += 2
			case 'u':
				if getu4(r.b[r.i:]) < 0 {
					return nil, false, false
				}
				r.i += 6
			default:
				return nil, false, false
			}
		case c < 0x20:
			return nil, false, false
		default:
			if c >= utf8.RuneSelf {
				esc = true // maybe not valid UTF-8: Unquote checks
			}
			r.i++
		}
	}
	return nil, false, false
}

// getu4 decodes \uXXXX at the start of s, or returns -1.
func getu4(s []byte) rune {
	if len(s) < 6 || s[0] != '\\' || s[1] != 'u' {
		return -1
	}
	var r rune
	for _, c := range s[2:6] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return -1
		}
		r = r*16 + rune(c)
	}
	return r
}

// Unquote turns a string's raw bytes (as RawString returned them) into
// its value as encoding/json does: escapes decoded, a lone surrogate or an
// invalid UTF-8 byte becoming U+FFFD.
func Unquote(s []byte, esc bool) string {
	if !esc || utf8.Valid(s) && !hasByte(s, '\\') {
		return string(s)
	}
	b := make([]byte, 0, len(s)+2*utf8.UTFMax)
	for r := 0; r < len(s); {
		c := s[r]
		switch {
		case c == '\\':
			switch s[r+1] {
			case '"', '\\', '/':
				b = append(b, s[r+1])
			case 'b':
				b = append(b, '\b')
			case 'f':
				b = append(b, '\f')
			case 'n':
				b = append(b, '\n')
			case 'r':
				b = append(b, '\r')
			case 't':
				b = append(b, '\t')
			case 'u':
				rr := getu4(s[r:])
				r += 6
				if utf16.IsSurrogate(rr) {
					if rr1 := getu4(s[r:]); rr1 >= 0 {
						if dec := utf16.DecodeRune(rr, rr1); dec != unicode.ReplacementChar {
							b = utf8.AppendRune(b, dec)
							r += 6
							continue
						}
					}
					rr = unicode.ReplacementChar
				}
				b = utf8.AppendRune(b, rr)
				continue
			}
			r += 2
		case c < utf8.RuneSelf:
			b = append(b, c)
			r++
		default:
			rr, size := utf8.DecodeRune(s[r:])
			r += size
			b = utf8.AppendRune(b, rr) // RuneError for an invalid byte, as encoding/json
		}
	}
	return string(b)
}

func hasByte(s []byte, c byte) bool {
	for _, x := range s {
		if x == c {
			return true
		}
	}
	return false
}

// Object reads {"key": value, ...}: field reads the value of key, given
// as RawString returns it. Repeated keys are field's business.
func (r *Reader) Object(field func(key []byte, esc bool) bool) bool {
	if !r.Byte('{') {
		return false
	}
	if r.Byte('}') {
		return true
	}
	for {
		key, esc, ok := r.RawString()
		if !ok || !r.Byte(':') || !field(key, esc) {
			return false
		}
		if r.Byte(',') {
			continue
		}
		return r.Byte('}')
	}
}

// Array reads [elem, ...]; elem reads one element.
func (r *Reader) Array(elem func() bool) bool {
	if !r.Byte('[') {
		return false
	}
	if r.Byte(']') {
		return true
	}
	for {
		if !elem() {
			return false
		}
		if r.Byte(',') {
			continue
		}
		return r.Byte(']')
	}
}

// Strings reads an array of strings, stored in dst when store (as
// encoding/json: [] is an empty slice, not nil).
func (r *Reader) Strings(store bool, dst *[]string) bool {
	var out []string
	if store {
		out = []string{}
	}
	ok := r.Array(func() bool {
		var s string
		if !r.String(store, &s) {
			return false
		}
		if store {
			out = append(out, s)
		}
		return true
	})
	if ok && store {
		*dst = out
	}
	return ok
}

// StringMap reads an object of strings, stored in dst when store (as
// encoding/json: {} is an empty map, a repeated key keeps its last value).
func (r *Reader) StringMap(store bool, dst *map[string]string) bool {
	var m map[string]string
	if store {
		m = map[string]string{}
	}
	ok := r.Object(func(key []byte, esc bool) bool {
		var v string
		if !r.String(store, &v) {
			return false
		}
		if store {
			m[Unquote(key, esc)] = v
		}
		return true
	})
	if ok && store {
		*dst = m
	}
	return ok
}
