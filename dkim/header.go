package dkim

import (
	"bytes"
	"io"
	"mime"
	"net/mail"
	"strings"
)

// signedField is a header field the signature covers.
type signedField struct {
	name string
	// over: list the field once more than it occurs (RFC 6376 §5.4.2,
	// §8.15), so a copy added in transit — a second From: or Subject: that
	// a receiver might display instead — breaks the signature.
	over bool
}

// signedFields follows RFC 6376 §5.4.1: the fields that carry the message's
// meaning to its reader, including the MIME structure (RFC 2045), the
// threading fields (RFC 5322 §3.6.4) and the list fields, of which
// List-Unsubscribe-Post must be signed for one-click unsubscribe to work
// (RFC 8058 §4). Trace fields (Received, Return-Path) are left out: relays
// add them. Read-only.
var signedFields = [...]signedField{
	{"From", true},
	{"Reply-To", true},
	{"Subject", true},
	{"Date", true},
	{"To", true},
	{"Cc", true},
	{"Message-ID", true},
	{"MIME-Version", true},
	{"Content-Type", true},
	{"Content-Transfer-Encoding", false},
	{"Content-ID", false},
	{"Content-Description", false},
	{"Sender", false},
	{"In-Reply-To", false},
	{"References", false},
	{"Resent-Date", false},
	{"Resent-From", false},
	{"Resent-Sender", false},
	{"Resent-To", false},
	{"Resent-Cc", false},
	{"List-Id", false},
	{"List-Help", false},
	{"List-Unsubscribe", false},
	{"List-Unsubscribe-Post", false},
	{"List-Subscribe", false},
	{"List-Post", false},
	{"List-Owner", false},
	{"List-Archive", false},
}

// maxSignedCopies bounds how many instances of one field name are signed.
// A field that occurs more often is signed in its last maxSignedCopies
// instances (those a verifier picks first, RFC 6376 §5.4.2) and not
// over-signed, so the signature still verifies.
const maxSignedCopies = 16

// fieldSpan is one occurrence of a signed field in the message: its bytes
// msg[start:end], continuation lines included, final line break excluded.
type fieldSpan struct {
	field      int // index into signedFields
	start, end int
}

// headerScan is what signing needs from a message's header section.
type headerScan struct {
	spans     []fieldSpan // occurrences of signed fields, in message order
	counts    [len(signedFields)]int
	bodyStart int // offset of the body; len(msg) for a header-only message
}

// scanHeader indexes the header section without copying it. Lines end in
// LF with an optional CR before it, as go-msgauth's verifier reads them.
func scanHeader(msg []byte) headerScan {
	h := headerScan{bodyStart: len(msg)}
	cur := -1 // index in h.spans of the field whose continuation may follow
	for pos := 0; pos < len(msg); {
		next := len(msg)
		if nl := bytes.IndexByte(msg[pos:], '\n'); nl >= 0 {
			next = pos + nl + 1
		}
		line := bytes.TrimSuffix(bytes.TrimSuffix(msg[pos:next], []byte("\n")), []byte("\r"))
		switch {
		case len(line) == 0: // the empty line ends the header (RFC 5322 §2.1)
			h.bodyStart = next
			return h
		case line[0] == ' ' || line[0] == '\t': // folded (RFC 5322 §2.2.3)
			if cur >= 0 {
				h.spans[cur].end = pos + len(line)
			}
		default:
			cur = -1
			// A line without a colon counts under its whole text, as
			// go-msgauth's verifier reads it.
			name, _, _ := bytes.Cut(line, []byte(":"))
			if f := lookupField(bytes.TrimSpace(name)); f >= 0 {
				h.counts[f]++
				h.spans = append(h.spans, fieldSpan{f, pos, pos + len(line)})
				cur = len(h.spans) - 1
			}
		}
		pos = next
	}
	return h
}

// lookupField returns the index of name in signedFields, or -1.
func lookupField(name []byte) int {
	for i := range signedFields {
		if len(name) == len(signedFields[i].name) && strings.EqualFold(string(name), signedFields[i].name) {
			return i
		}
	}
	return -1
}

// from returns the value of the first From field, unfolded ("" if none).
func (h *headerScan) from(msg []byte) string {
	for _, sp := range h.spans {
		if sp.field == 0 {
			_, v, _ := bytes.Cut(unfold(nil, msg[sp.start:sp.end]), []byte(":"))
			return string(v)
		}
	}
	return ""
}

// signedHeader returns the header to hand to the signing library and the
// h= list. The header holds only the signed fields, unfolded, in message
// order, ending with the empty line. With relaxed header canonicalisation
// (RFC 6376 §3.4.2: unfold, then compress whitespace) each field hashes
// exactly as it does in the full message; what the library is not given it
// cannot parse slowly: long trace headers, or a field folded into many
// thousands of lines (go-msgauth joins continuation lines by repeated
// string concatenation, quadratic in their number).
func (h *headerScan) signedHeader(msg []byte) ([]byte, []string) {
	keep := make([]bool, len(h.spans))
	var seen [len(signedFields)]int
	size := len("\r\n")
	for i := len(h.spans) - 1; i >= 0; i-- { // the last instances are the ones verifiers pick first
		if f := h.spans[i].field; seen[f] < maxSignedCopies {
			seen[f]++
			keep[i] = true
			size += h.spans[i].end - h.spans[i].start + len("\r\n")
		}
	}
	hdr := make([]byte, 0, size)
	for i, sp := range h.spans {
		if keep[i] {
			hdr = append(unfold(hdr, msg[sp.start:sp.end]), "\r\n"...)
		}
	}
	hdr = append(hdr, "\r\n"...)
	var keys []string
	for i, f := range signedFields {
		n := seen[i]
		if f.over && h.counts[i] <= maxSignedCopies {
			n++ // RFC 6376 §5.4.2: one more than present
		}
		for ; n > 0; n-- {
			keys = append(keys, f.name)
		}
	}
	return hdr, keys
}

// unfold appends field to dst without its line breaks (RFC 5322 §2.2.3).
func unfold(dst, field []byte) []byte {
	for {
		i := bytes.IndexByte(field, '\n')
		if i < 0 {
			return append(dst, field...)
		}
		dst = append(dst, bytes.TrimSuffix(field[:i], []byte("\r"))...)
		field = field[i+1:]
	}
}

// fromDomain returns the lower-case domain of the first mailbox in a From
// value (RFC 5322 §3.6.2), or "" when it cannot be parsed.
func fromDomain(value string) string {
	// Only the address matters, not the display name: an unknown RFC 2047
	// charset in the name must not make the From unparseable.
	p := mail.AddressParser{WordDecoder: &mime.WordDecoder{
		CharsetReader: func(_ string, r io.Reader) (io.Reader, error) { return r, nil },
	}}
	list, err := p.ParseList(value)
	if err != nil || len(list) == 0 {
		return ""
	}
	at := strings.LastIndexByte(list[0].Address, '@')
	if at < 0 {
		return ""
	}
	return normalizeDomain(list[0].Address[at+1:])
}

// normalizeDomain lower-cases a domain and drops a trailing dot.
func normalizeDomain(d string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d)), ".")
}
