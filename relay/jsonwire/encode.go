package jsonwire

import (
	"errors"
	"slices"
	"time"
	"unicode/utf8"
)

// ErrTimeRange is AppendTime's refusal of a time json.Marshal refuses.
var ErrTimeRange = errors.New("jsonwire: time outside RFC 3339")

// AppendTime is time.Time.MarshalJSON: RFC 3339 with nanoseconds, and the
// same refusals (time.Time.appendStrictRFC3339).
func AppendTime(b []byte, t time.Time) ([]byte, error) {
	n0 := len(b) + 1
	b = append(t.AppendFormat(append(b, '"'), time.RFC3339Nano), '"')
	s := b[n0 : len(b)-1]
	switch {
	case len(s) < len("9999-") || s[4] != '-':
		return nil, ErrTimeRange
	case s[len(s)-1] != 'Z':
		c := s[len(s)-len("Z07:00")]
		h := s[len(s)-len("07:00"):]
		if ('0' <= c && c <= '9') || 10*(h[0]-'0')+(h[1]-'0') >= 24 {
			return nil, ErrTimeRange
		}
	}
	return b, nil
}

const hexDigits = "0123456789abcdef"

// AppendString is encoding/json's string encoding with HTML escaping (the
// default of json.Marshal): ", \ and control characters escaped, <, > and
// & as \u003c and the like, invalid UTF-8 as \ufffd, U+2028 and U+2029
// escaped.
func AppendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(append(b, s[start:i]...), `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(append(b, s[start:i]...), '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	return append(append(b, s[start:]...), '"')
}

// AppendStrings is encoding/json's array of strings.
func AppendStrings(b []byte, ss []string) []byte {
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = AppendString(b, s)
	}
	return append(b, ']')
}

// AppendStringMap is encoding/json's object of a map of strings: keys
// sorted.
func AppendStringMap(b []byte, m map[string]string) []byte {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = AppendString(append(AppendString(b, k), ':'), m[k])
	}
	return append(b, '}')
}
