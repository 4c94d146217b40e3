package submit

import (
	"bytes"
	"mime"
	"strings"
	"unicode/utf8"
)

// Message metadata (issue 18, point 3).
//
// An application names what a message is about in header fields that
// never leave the relay:
//
//	X-Jetrelay-Meta-<key>: <value>   (at most metaMaxFields of them)
//	X-Jetrelay-Tag: <tag>            (at most one)
//
// They are removed from the message at submission, before the DKIM
// signature is computed and before the message is stored, so neither the
// recipient nor the signature ever sees them; their values travel in the
// queue envelope (queue.Envelope.Meta/Tag) into every event and event log
// line of the message (events.Event.Meta/Tag), where `jetrelay logs
// --meta key=value` and webhooks find them.
//
// Rules (anything else refuses the message with 554 5.6.0 and a text
// naming the problem; nothing is stored):
//   - Keys are the field name after "X-Jetrelay-Meta-", lower-cased: 1 to
//     metaMaxKey characters of a-z, 0-9, '-', '_' and '.'. Narrower than a
//     header field name (RFC 5322 §3.6.8 ftext) on purpose: keys become
//     JSON keys, log field names and `logs --meta key=value` arguments, where
//     '=', quotes or '$' would be ambiguous.
//   - A key given twice (in any letter case) is refused: which value wins
//     would be a guess. So is a second X-Jetrelay-Tag.
//   - Values are unfolded (RFC 5322 §2.2.3) and trimmed; RFC 2047
//     encoded-words (which mail libraries write for non-ASCII values) are
//     decoded, UTF-8, ISO-8859-1 and US-ASCII ones; an encoded-word in
//     another charset is kept as written. Raw UTF-8 (RFC 6532) is taken
//     as it is. The decoded value must be valid UTF-8 without control
//     characters, at most metaMaxValue characters (metaMaxTag for the tag:
//     a label to group by, not data). An empty value is kept as ""; an
//     empty tag is no tag.
//   - Other X-Jetrelay-* fields are left alone.
const (
	metaPrefix    = "x-jetrelay-meta-"
	tagField      = "x-jetrelay-tag"
	metaMaxFields = 10
	metaMaxKey    = 32
	metaMaxValue  = 256
	metaMaxTag    = 128
	// metaMaxRaw bounds a value before decoding: 256 characters of 4
	// octets each, base64 in encoded-words, fit with room to spare.
	metaMaxRaw = 16 * metaMaxValue
)

// metaFields is what stripMeta took out of a message.
type metaFields struct {
	meta    map[string]string // nil when none
	tag     string
	tagSeen bool // an X-Jetrelay-Tag field, empty or not
}

// isMetaField reports whether a (lower-cased) field name is one stripMeta
// takes out.
func isMetaField(lname string) bool {
	return lname == tagField || strings.HasPrefix(lname, metaPrefix)
}

// metaWords decodes RFC 2047 encoded-words of the charsets mime knows.
var metaWords = &mime.WordDecoder{}

// span is one header field's octets, its continuation lines and final
// CRLF included, within the message.
type span struct{ start, end int }

// stripMeta removes the metadata fields from msg's header section (msg is
// CRLF-normalised and its header already checked by scanHeader) and
// returns the message without them. The message is rewritten in place:
// the header octets before each removed field move towards the body, so
// the result is a suffix of msg and no copy of the body is made.
func stripMeta(msg []byte) ([]byte, metaFields, error) {
	var mf metaFields
	var cut []span
	for f := range headerFields(msg) {
		lname := strings.ToLower(f.name)
		if !isMetaField(lname) {
			continue
		}
		if err := mf.add(lname, f.value); err != nil {
			return nil, mf, err
		}
		cut = append(cut, span{f.start, f.end})
	}
	if len(cut) == 0 {
		return msg, mf, nil
	}
	// Move the kept header pieces right, last first (copy is a memmove),
	// so that they end where the last removed field ended.
	dst := cut[len(cut)-1].end
	for i := len(cut) - 1; i >= 0; i-- {
		from := 0
		if i > 0 {
			from = cut[i-1].end
		}
		keep := msg[from:cut[i].start]
		dst -= len(keep)
		copy(msg[dst:], keep)
	}
	return msg[dst:], mf, nil
}

// add checks and records one metadata field.
func (mf *metaFields) add(lname string, raw string) error {
	value, err := metaValue(raw)
	if lname == tagField {
		switch {
		case mf.tagSeen:
			return errTagDup
		case err != nil:
			return metaReply("X-Jetrelay-Tag", err.Error())
		case utf8.RuneCountInString(value) > metaMaxTag:
			return errTagLong
		}
		mf.tag, mf.tagSeen = value, true
		return nil
	}
	key := strings.TrimPrefix(lname, metaPrefix)
	switch {
	case !validMetaKey(key):
		return errMetaKey
	case hasKey(mf.meta, key):
		return metaReply("X-Jetrelay-Meta-"+key, "given more than once")
	case len(mf.meta) >= metaMaxFields:
		return errMetaCount
	case err != nil:
		return metaReply("X-Jetrelay-Meta-"+key, err.Error())
	case utf8.RuneCountInString(value) > metaMaxValue:
		return metaReply("X-Jetrelay-Meta-"+key, "value longer than 256 characters")
	}
	if mf.meta == nil {
		mf.meta = map[string]string{}
	}
	mf.meta[key] = value
	return nil
}

func hasKey(m map[string]string, k string) bool {
	_, ok := m[k]
	return ok
}

// metaProblem is why a value is refused (its text goes into the reply).
type metaProblem string

func (p metaProblem) Error() string { return string(p) }

// metaValue unfolds, trims and decodes a field value (see the rules above).
func metaValue(raw string) (string, error) {
	v := strings.TrimSpace(strings.ReplaceAll(raw, "\r\n", ""))
	if len(v) > metaMaxRaw { // far beyond any valid value: no decoding work
		return "", metaProblem("value too long")
	}
	if strings.Contains(v, "=?") {
		if dec, err := metaWords.DecodeHeader(v); err == nil {
			v = dec
		}
	}
	if !utf8.ValidString(v) {
		return "", metaProblem("value is not UTF-8 text")
	}
	if strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 && r != '\t' || r == 0x7f }) {
		return "", metaProblem("value contains control characters")
	}
	return v, nil
}

// validMetaKey: 1 to metaMaxKey of a-z 0-9 - _ . (already lower-cased).
func validMetaKey(k string) bool {
	if k == "" || len(k) > metaMaxKey {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// field is one header field of a checked header section.
type field struct {
	name, value string // value: everything after the colon, folds included
	start, end  int    // octets of the field in the message, final CRLF included
}

// headerFields yields the fields of msg's header section, which
// scanHeader has checked (every line a field or a continuation).
func headerFields(msg []byte) func(yield func(field) bool) {
	return func(yield func(field) bool) {
		pos := 0
		for pos < len(msg) {
			end := lineEnd(msg, pos)
			if end == pos+2 || !bytes.Contains(msg[pos:end], []byte(":")) { // empty line: the body starts
				return
			}
			f := field{start: pos}
			colon := pos + bytes.IndexByte(msg[pos:end], ':')
			f.name = strings.TrimRight(string(msg[pos:colon]), " \t")
			for end < len(msg) && (msg[end] == ' ' || msg[end] == '\t') {
				end = lineEnd(msg, end)
			}
			f.end = end
			f.value = string(msg[colon+1 : max(colon+1, end-2)])
			if !yield(f) {
				return
			}
			pos = end
		}
	}
}

// lineEnd is the offset just after the CRLF of the line starting at pos
// (or len(msg) for a last line without one).
func lineEnd(msg []byte, pos int) int {
	i := bytes.Index(msg[pos:], []byte("\r\n"))
	if i < 0 {
		return len(msg)
	}
	return pos + i + 2
}
