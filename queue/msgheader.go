package queue

// The message's own header section, for operators (jetrelay queue show):
// read from the stored body (inline or its first chunks), never from the
// NATS headers the queue keeps its envelope and schedule in.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"strconv"
	"strings"
	"unicode/utf8"
)

// MaxHeaderSection bounds how much of a stored message MessageHeader reads
// and parses: a header section longer than this is shown cut, Truncated set.
const MaxHeaderSection = 64 << 10

// MessageHeader is a message's header section as an operator sees it.
type MessageHeader struct {
	Fields []HeaderField `json:"fields"`
	// Truncated: the section was longer than MaxHeaderSection; Fields
	// holds the whole lines before that limit.
	Truncated bool `json:"truncated,omitempty"`
}

// HeaderField is one header field, unfolded (RFC 5322 §2.2.3) and with
// RFC 2047 encoded-words decoded for display. Name and Value hold no
// control characters: they are escaped (\x1b, \r, ...), as is invalid
// UTF-8, so they can be printed to a terminal as they are. Name is empty
// for a line that is not a field (malformed input, shown as it was).
type HeaderField struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// MessageHeader reads the header section of it's message from the stored
// body, at most MaxHeaderSection bytes of it (for a chunked body only the
// first chunks).
func (q *Queue) MessageHeader(ctx context.Context, it *Item) (MessageHeader, error) {
	head, err := q.bodyPrefix(ctx, it, MaxHeaderSection+1)
	if err != nil {
		return MessageHeader{}, err
	}
	return ParseMessageHeader(head), nil
}

// bodyPrefix returns up to n leading bytes of it's stored message.
func (q *Queue) bodyPrefix(ctx context.Context, it *Item, n int) ([]byte, error) {
	if it.Env.Chunks == 0 {
		return it.data[:min(len(it.data), n)], nil
	}
	s, err := q.Stream(ctx)
	if err != nil {
		return nil, err
	}
	var out []byte
	for i := 0; i < it.Env.Chunks && len(out) < n; i++ {
		m, err := s.GetLastMsgForSubject(ctx, SubjBody+"."+it.Env.ID+"."+strconv.Itoa(i))
		if err != nil {
			return nil, fmt.Errorf("queue: body chunk %d of %s: %w", i, it.Env.ID, err)
		}
		out = append(out, m.Data[:min(len(m.Data), n-len(out))]...)
	}
	return out, nil
}

// ParseMessageHeader parses the header section at the start of msg (RFC
// 5322 §2.2: fields up to the first empty line), tolerating bare LF line
// ends and malformed lines. At most MaxHeaderSection bytes are looked at.
func ParseMessageHeader(msg []byte) MessageHeader {
	var h MessageHeader
	end := headerEnd(msg)
	if end < 0 && len(msg) <= MaxHeaderSection {
		end = len(msg) // a message without a body (RFC 5322 §3.5)
	}
	if end < 0 || end > MaxHeaderSection {
		h.Truncated = true
		end = min(len(msg), MaxHeaderSection)
		if i := bytes.LastIndexByte(msg[:end], '\n'); i >= 0 {
			end = i + 1 // whole lines only
		}
	}
	var lines []string
	for _, l := range strings.SplitAfter(string(msg[:end]), "\n") {
		l = strings.TrimRight(l, "\r\n")
		if l == "" {
			continue
		}
		if (l[0] == ' ' || l[0] == '\t') && len(lines) > 0 {
			lines[len(lines)-1] += l // unfold: drop the line break only
			continue
		}
		lines = append(lines, l)
	}
	for _, l := range lines {
		name, value, ok := strings.Cut(l, ":")
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			h.Fields = append(h.Fields, HeaderField{Value: displaySafe(l)})
			continue
		}
		value = decodeWords(strings.TrimSpace(value))
		h.Fields = append(h.Fields, HeaderField{Name: displaySafe(name), Value: displaySafe(value)})
	}
	return h
}

// headerEnd is the offset just past the header section's last field line
// (before the empty line), or -1 when msg holds no empty line.
func headerEnd(msg []byte) int {
	if len(msg) > 0 && msg[0] == '\n' || bytes.HasPrefix(msg, []byte("\r\n")) {
		return 0 // no header fields at all
	}
	for off := 0; off < len(msg); {
		i := bytes.IndexByte(msg[off:], '\n')
		if i < 0 {
			return -1
		}
		next := off + i + 1
		if rest := msg[next:]; len(rest) > 0 && rest[0] == '\n' || bytes.HasPrefix(rest, []byte("\r\n")) {
			return next
		}
		off = next
	}
	return -1
}

// errCharset refuses a charset the standard library cannot decode.
var errCharset = errors.New("unsupported charset")

// decodeWords decodes RFC 2047 encoded-words (UTF-8, ISO-8859-1 and
// US-ASCII); a value with an encoded-word in another charset, or a broken
// one, is shown as it is.
func decodeWords(v string) string {
	if !strings.Contains(v, "=?") {
		return v
	}
	d := mime.WordDecoder{CharsetReader: func(charset string, _ io.Reader) (io.Reader, error) {
		return nil, fmt.Errorf("%w %s", errCharset, charset)
	}}
	out, err := d.DecodeHeader(v)
	if err != nil {
		return v
	}
	return out
}

// displaySafe escapes control characters (C0, DEL, C1) and invalid UTF-8
// so that a terminal shows them instead of obeying them. A tab stays.
func displaySafe(s string) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || (r < 0x20 && r != '\t') || (r >= 0x7f && r < 0xa0) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r < 0x20 && r != '\t', r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r >= 0x80 && r < 0xa0:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}
