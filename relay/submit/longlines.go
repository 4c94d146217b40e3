package submit

import (
	"bytes"
	"errors"
	"io"
	"mime"
	"mime/quotedprintable"
	"strings"
)

// Lines longer than RFC 5322 §2.1.1 allows (998 octets without CRLF; RFC
// 5321 §4.5.3.1.6 allows 1000 with it) are not passed on: a receiving MTA
// may refuse, truncate or break them, which also breaks the DKIM signature.
// go-smtp refuses lines over submission.max_line_length at the read; lines
// between 999 and that length (apps send long HTML lines) are handled here,
// before signing. normalize detects them in the pass it makes anyway, so a
// message without one costs nothing more.
//
// Decisions:
//   - A header line over 998 octets is folded at whitespace (RFC 5322
//     §2.2.3). A field with no whitespace to fold at is refused 554 5.6.0:
//     RFC 2047 encoding is only allowed in unstructured text and would
//     change the meaning of an address or a Message-ID.
//   - A body line over 998 octets: with long_lines: reject the message is
//     refused 554 5.6.0. With encode, the MIME leaf part holding it is
//     re-encoded as quoted-printable (RFC 2045 §6.7), the whole body for a
//     single-part message, with Content-Transfer-Encoding replaced (and
//     MIME-Version added to a message that had none). Other parts stay
//     byte for byte as they were.
//   - A base64 part with long lines is malformed but unambiguous: it is
//     re-wrapped at 76 characters (RFC 2045 §6.8: decoders ignore line
//     breaks), its content unchanged. A quoted-printable part with long
//     lines is decoded and encoded again; one that does not decode, or an
//     unknown transfer encoding, is refused 554 5.6.0.
//   - Never inside signed or encrypted content (multipart/signed,
//     multipart/encrypted, application/(x-)pkcs7-mime, PGP parts or inline
//     PGP): re-encoding breaks the signature, so a long line there is
//     refused 554 5.6.0. So are long lines in a multipart preamble or
//     epilogue, a multipart without a usable boundary, and trees deeper
//     than maxMIMEDepth or with more than maxMIMEParts parts.
const (
	maxTextLine  = 998 // RFC 5322 §2.1.1, without CRLF
	maxMIMEDepth = 8
	maxMIMEParts = 256
	b64LineLen   = 76 // RFC 2045 §6.8
)

var crlf = []byte("\r\n")

// fixLongLines returns msg (CRLF-normalised) with no line longer than 998
// octets, or a 554 5.6.0 reply. reject refuses long body lines instead of
// re-encoding them.
func fixLongLines(msg []byte, reject bool) ([]byte, error) {
	f := &lineFixer{reject: reject}
	return f.entity(msg, 0, true)
}

type lineFixer struct {
	reject bool
	parts  int
}

// entity fixes one MIME entity: a message (isMessage) or a body part.
func (f *lineFixer) entity(ent []byte, depth int, isMessage bool) ([]byte, error) {
	hdr, body, sep := splitEntity(ent)
	hdr, err := foldHeader(hdr)
	if err != nil {
		return nil, err
	}
	if !hasLongLine(body) {
		return joinEntity(hdr, body, sep), nil
	}
	if f.reject {
		return nil, errLongLine
	}
	ct, boundary := contentType(hdr)
	switch {
	case depth >= maxMIMEDepth:
		return nil, errLongLine
	case protectedType(ct):
		return nil, errLongSigned
	case strings.HasPrefix(ct, "multipart/"):
		body, err = f.multipart(body, boundary, depth)
	case ct == "message/rfc822" || ct == "message/global":
		body, err = f.entity(body, depth+1, true)
	default:
		hdr, body, err = reencode(hdr, body, isMessage)
	}
	if err != nil {
		return nil, err
	}
	return joinEntity(hdr, body, true), nil
}

// splitEntity splits at the first empty line: hdr keeps its CRLFs, body
// starts after the empty line (sep: there was one). An entity starting
// with CRLF has no header.
func splitEntity(ent []byte) (hdr, body []byte, sep bool) {
	if bytes.HasPrefix(ent, crlf) {
		return nil, ent[2:], true
	}
	if i := bytes.Index(ent, []byte("\r\n\r\n")); i >= 0 {
		return ent[:i+2], ent[i+4:], true
	}
	return ent, nil, false
}

// joinEntity puts header, the empty line (if sep) and body together.
func joinEntity(hdr, body []byte, sep bool) []byte {
	out := make([]byte, 0, len(hdr)+len(body)+2)
	out = append(out, hdr...)
	if sep {
		out = append(out, crlf...)
	}
	return append(out, body...)
}

// hasLongLine reports whether b has a line over maxTextLine octets.
func hasLongLine(b []byte) bool {
	for len(b) > 0 {
		i := bytes.Index(b, crlf)
		if i < 0 {
			return len(b) > maxTextLine
		}
		if i > maxTextLine {
			return true
		}
		b = b[i+2:]
	}
	return false
}

// foldHeader folds every header line over maxTextLine octets at
// whitespace, by inserting CRLF before a space or tab (RFC 5322 §2.2.3);
// no part may consist of whitespace only (§3.2.2).
func foldHeader(hdr []byte) ([]byte, error) {
	if !hasLongLine(hdr) {
		return hdr, nil
	}
	out := make([]byte, 0, len(hdr)+len(hdr)/maxTextLine*2+2)
	for len(hdr) > 0 {
		i := bytes.Index(hdr, crlf)
		line, rest := hdr, []byte(nil)
		if i >= 0 {
			line, rest = hdr[:i], hdr[i+2:]
		}
		for len(line) > maxTextLine {
			at := foldPoint(line)
			if at < 0 {
				return nil, errLongHeader
			}
			out = append(append(out, line[:at]...), crlf...)
			line = line[at:]
		}
		out = append(append(out, line...), crlf...)
		hdr = rest
	}
	return out, nil
}

// foldPoint is the last space or tab within the first maxTextLine octets
// that has something other than whitespace before it, or -1.
func foldPoint(line []byte) int {
	first := bytes.IndexFunc(line, func(r rune) bool { return r != ' ' && r != '\t' })
	if first < 0 {
		return -1
	}
	for at := maxTextLine; at > first; at-- {
		if line[at] == ' ' || line[at] == '\t' {
			return at
		}
	}
	return -1
}

// headerValue returns the unfolded value of the first field called name.
func headerValue(hdr []byte, name string) (string, bool) {
	var val []byte
	found := false
	for len(hdr) > 0 {
		i := bytes.Index(hdr, crlf)
		line := hdr
		if i >= 0 {
			line, hdr = hdr[:i], hdr[i+2:]
		} else {
			hdr = nil
		}
		if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
			if found {
				val = append(val, line...)
			}
			continue
		}
		if found {
			break
		}
		if n, v, ok := bytes.Cut(line, []byte(":")); ok && strings.EqualFold(strings.TrimSpace(string(n)), name) {
			val, found = append([]byte(nil), v...), true
		}
	}
	return strings.TrimSpace(string(val)), found
}

// contentType returns the lowercased media type (RFC 2045 §5.2 default
// text/plain) and the boundary parameter.
func contentType(hdr []byte) (mediaType, boundary string) {
	v, ok := headerValue(hdr, "Content-Type")
	if !ok {
		return "text/plain", ""
	}
	mt, params, err := mime.ParseMediaType(v)
	if err != nil && !errors.Is(err, mime.ErrInvalidMediaParameter) {
		mt, _, _ = strings.Cut(strings.ToLower(v), ";")
		return strings.TrimSpace(mt), ""
	}
	return mt, params["boundary"]
}

// protectedType reports content whose signature or encryption re-encoding
// would break (RFC 1847, RFC 8551, RFC 3156).
func protectedType(mt string) bool {
	switch mt {
	case "multipart/signed", "multipart/encrypted", "application/pkcs7-mime", "application/x-pkcs7-mime",
		"application/pkcs7-signature", "application/x-pkcs7-signature", "application/pgp-encrypted",
		"application/pgp-signature", "application/pgp-keys":
		return true
	}
	return false
}

// multipart fixes the parts of a multipart body (RFC 2046 §5.1.1): every
// part is passed on byte for byte unless it has a long line.
func (f *lineFixer) multipart(body []byte, boundary string, depth int) ([]byte, error) {
	delim := []byte("--" + boundary)
	if boundary == "" || len(delim)+2 > maxTextLine {
		return nil, errLongLine
	}
	out := make([]byte, 0, len(body)+len(body)/8)
	start, closed := -1, false // start of the current part (-1: preamble)
	for pos := 0; pos < len(body) && !closed; {
		end, next := bytes.Index(body[pos:], crlf), 0
		if end < 0 { // a nested multipart's last line: its CRLF belongs to the outer delimiter
			end, next = len(body)-pos, len(body)
		} else {
			next = pos + end + 2
		}
		line := body[pos : pos+end]
		if isDelimiter(line, delim) {
			var err error
			if out, err = f.part(out, body[max(start, 0):pos], depth, start < 0); err != nil {
				return nil, err
			}
			out = append(out, body[pos:next]...)
			closed = bytes.HasPrefix(line[len(delim):], []byte("--"))
			start = next
		}
		pos = next
	}
	if !closed || hasLongLine(body[start:]) { // unterminated, or a long epilogue line
		return nil, errLongLine
	}
	return append(out, body[start:]...), nil
}

// isDelimiter reports a boundary delimiter line, close delimiter included,
// with optional transport padding.
func isDelimiter(line, delim []byte) bool {
	if !bytes.HasPrefix(line, delim) {
		return false
	}
	rest := bytes.TrimPrefix(line[len(delim):], []byte("--"))
	return len(bytes.Trim(rest, " \t")) == 0
}

// part appends one part (raw: up to the delimiter, with the CRLF that
// belongs to it) to out, fixed if it has a long line; a preamble with a
// long line is refused.
func (f *lineFixer) part(out, raw []byte, depth int, preamble bool) ([]byte, error) {
	if !hasLongLine(raw) {
		return append(out, raw...), nil
	}
	if f.parts++; preamble || f.parts > maxMIMEParts {
		return nil, errLongLine
	}
	content := bytes.TrimSuffix(raw, crlf)
	fixed, err := f.entity(content, depth+1, false)
	if err != nil {
		return nil, err
	}
	out = append(out, fixed...)
	if len(content) < len(raw) {
		out = append(out, crlf...)
	}
	return out, nil
}

// reencode turns a leaf body with long lines into quoted-printable, or
// re-wraps base64, and sets Content-Transfer-Encoding accordingly.
func reencode(hdr, body []byte, isMessage bool) ([]byte, []byte, error) {
	if bytes.Contains(body, []byte("-----BEGIN PGP ")) {
		return nil, nil, errLongSigned // inline PGP: the signature covers these lines
	}
	cte, _ := headerValue(hdr, "Content-Transfer-Encoding")
	content := body
	switch strings.ToLower(cte) {
	case "", "7bit", "8bit", "binary":
	case "base64":
		return hdr, rewrapBase64(body), nil
	case "quoted-printable":
		dec, err := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(body)))
		if err != nil {
			return nil, nil, errLongLine
		}
		content = dec
	default:
		return nil, nil, errLongLine
	}
	var enc bytes.Buffer
	enc.Grow(len(content) + len(content)/8)
	w := quotedprintable.NewWriter(&enc)
	_, _ = w.Write(content) // writes to a bytes.Buffer do not fail
	_ = w.Close()
	if bytes.HasSuffix(body, crlf) && !bytes.HasSuffix(enc.Bytes(), crlf) {
		if bytes.HasSuffix(content, crlf) {
			enc.Write(crlf)
		} else {
			enc.WriteString("=\r\n") // a soft line break: the content has no final newline
		}
	}
	hdr = setField(hdr, "Content-Transfer-Encoding", "quoted-printable")
	if _, ok := headerValue(hdr, "MIME-Version"); isMessage && !ok {
		hdr = append(hdr, "MIME-Version: 1.0\r\n"...)
	}
	return hdr, enc.Bytes(), nil
}

// rewrapBase64 removes line breaks and breaks the text every 76 characters.
func rewrapBase64(body []byte) []byte {
	flat := bytes.ReplaceAll(body, crlf, nil)
	out := make([]byte, 0, len(flat)+len(flat)/b64LineLen*2+2)
	for len(flat) > b64LineLen {
		out = append(append(out, flat[:b64LineLen]...), crlf...)
		flat = flat[b64LineLen:]
	}
	if len(flat) > 0 {
		out = append(append(out, flat...), crlf...)
	}
	return out
}

// setField removes every field called name (with its continuation lines)
// and appends "name: value".
func setField(hdr []byte, name, value string) []byte {
	out := make([]byte, 0, len(hdr)+len(name)+len(value)+4)
	skipping := false
	for len(hdr) > 0 {
		i := bytes.Index(hdr, crlf)
		line := hdr
		if i >= 0 {
			line, hdr = hdr[:i+2], hdr[i+2:]
		} else {
			line, hdr = append(append([]byte(nil), hdr...), crlf...), nil
		}
		if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
			if !skipping {
				out = append(out, line...)
			}
			continue
		}
		n, _, _ := bytes.Cut(line, []byte(":"))
		skipping = strings.EqualFold(strings.TrimSpace(string(n)), name)
		if !skipping {
			out = append(out, line...)
		}
	}
	return append(out, name+": "+value+"\r\n"...)
}
