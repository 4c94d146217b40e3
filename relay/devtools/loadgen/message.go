package loadgen

import (
	"bytes"
	"strconv"
	"strings"
	"time"
)

// lineLen is the length of a body line before its CRLF (RFC 2045 §6.8 keeps
// encoded lines at 76 characters; plain text senders do much the same).
const lineLen = 76

// bodyWords fill the body; any text works, but realistic word lengths keep
// compressors and DKIM canonicalisation honest.
var bodyWords = strings.Fields(`the quarterly report shows steady growth in
	every region and our support team answered most tickets within one hour
	please find the details below and contact your account manager with any
	questions about invoices shipping schedules or the renewal of your plan
	thank you for being a valued customer we look forward to working together`)

// template is what every message of one size shares: the From line and a
// pre-rendered body. It is immutable after newTemplate, so workers share it.
type template struct {
	size    int
	from    string
	msgHost string // Message-ID right-hand side
	runID   string // Message-ID uniqueness across runs
	body    []byte // 76-character CRLF lines, at least size bytes
}

func newTemplate(size int, from, runID string) *template {
	t := &template{size: size, from: from, runID: runID, msgHost: "bench.jetrelay.test"}
	if at := strings.LastIndexByte(from, '@'); at >= 0 && at+1 < len(from) {
		t.msgHost = from[at+1:]
	}
	t.body = renderBody(size)
	return t
}

// renderBody returns at least n bytes of text lines of exactly lineLen
// characters, each ending in CRLF.
func renderBody(n int) []byte {
	var b bytes.Buffer
	b.Grow(n + lineLen + 2)
	line := make([]byte, 0, lineLen+len("\r\n"))
	w := 0
	for b.Len() < n {
		line = line[:0]
		for len(line) < lineLen {
			word := bodyWords[w%len(bodyWords)]
			w++
			if len(line) > 0 {
				line = append(line, ' ')
			}
			line = append(line, word...)
		}
		line = append(line[:lineLen], "\r\n"...)
		b.Write(line)
	}
	return b.Bytes()
}

// render appends message number n for rcpt to buf[:0] and returns it: the
// headers, then the body cut so the message is exactly t.size bytes (or the
// headers plus an empty line if they alone are larger), always ending in CRLF.
func (t *template) render(buf []byte, n int64, rcpt []byte, date []byte) []byte {
	b := buf[:0]
	b = append(b, "From: Load Generator <"...)
	b = append(b, t.from...)
	b = append(b, ">\r\nTo: <"...)
	b = append(b, rcpt...)
	b = append(b, ">\r\nSubject: jetrelay bench message "...)
	b = strconv.AppendInt(b, n, 10)
	b = append(b, "\r\nDate: "...)
	b = append(b, date...)
	b = append(b, "\r\nMessage-ID: <"...)
	b = strconv.AppendInt(b, n, 10)
	b = append(b, '.')
	b = append(b, t.runID...)
	b = append(b, '@')
	b = append(b, t.msgHost...)
	b = append(b, ">\r\nMIME-Version: 1.0\r\n"+
		"Content-Type: text/plain; charset=us-ascii\r\n"+
		"Content-Transfer-Encoding: 7bit\r\n\r\n"...)
	rest := t.size - len(b)
	if rest < len("\r\n") {
		return append(b, "\r\n"...)
	}
	b = append(b, t.body[:rest-2]...)
	if b[len(b)-1] == '\r' { // cut between CR and LF: no bare CR
		b[len(b)-1] = '.'
	}
	return append(b, "\r\n"...)
}

// rcptPattern expands "user{n}@example.test" for a message number.
type rcptPattern struct{ parts []string }

func newRcptPattern(p string) rcptPattern { return rcptPattern{strings.Split(p, "{n}")} }

// appendTo appends the address for message n to b.
func (p rcptPattern) appendTo(b []byte, n int64) []byte {
	for i, part := range p.parts {
		if i > 0 {
			b = strconv.AppendInt(b, n, 10)
		}
		b = append(b, part...)
	}
	return b
}

// dateCache formats the Date header (RFC 5322 §3.3) once per second.
type dateCache struct {
	sec int64
	buf []byte
}

func (d *dateCache) get(now time.Time) []byte {
	if s := now.Unix(); s != d.sec || d.buf == nil {
		d.sec = s
		d.buf = now.AppendFormat(d.buf[:0], time.RFC1123Z)
	}
	return d.buf
}
