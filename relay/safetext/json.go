package safetext

import "unicode/utf8"

// JSON returns a JSON text that prints safely on a terminal: every rune
// that Terminal would escape, except '\n' and '\t', is written as a \uXXXX
// escape, and an invalid UTF-8 byte as \ufffd. In valid JSON such a rune can
// only sit inside a string (or be '\r' whitespace between tokens), and in a
// string the escape means the same character, so the result decodes to the
// same value. Compact foreign JSON first (json.Compact) so that no '\r'
// whitespace is left to escape. b is returned as it is when nothing needs
// escaping.
func JSON(b []byte) []byte {
	i := 0
	for i < len(b) {
		_, size, unsafe := jsonRune(b[i:])
		if unsafe {
			break
		}
		i += size
	}
	if i == len(b) {
		return b
	}
	out := make([]byte, 0, len(b)+16)
	out = append(out, b[:i]...)
	for i < len(b) {
		r, size, unsafe := jsonRune(b[i:])
		if unsafe {
			out = append(out, '\\', 'u', hexDigits[r>>12&0xf], hexDigits[r>>8&0xf], hexDigits[r>>4&0xf], hexDigits[r&0xf])
		} else {
			out = append(out, b[i:i+size]...)
		}
		i += size
	}
	return out
}

// jsonRune decodes the first character of b and says whether it must be
// written as the \u escape of r.
func jsonRune(b []byte) (r rune, size int, unsafe bool) {
	c := b[0]
	if c < utf8.RuneSelf {
		return rune(c), 1, c != '\n' && c != '\t' && (c < 0x20 || c == 0x7f)
	}
	r, size = utf8.DecodeRune(b)
	if r == utf8.RuneError && size == 1 {
		return utf8.RuneError, 1, true
	}
	return r, size, needsEscape(r)
}
