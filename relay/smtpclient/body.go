package smtpclient

import (
	"bytes"
	"mime"
	"mime/quotedprintable"
	"strings"
)

// has8bit reports whether b has any byte above 127.
func has8bit(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return true
		}
	}
	return false
}

// toSevenBit converts an 8-bit RFC 5322 message for a server without
// 8BITMIME (RFC 6152 §3): an 8bit single-part body is re-encoded as
// quoted-printable and its Content-Transfer-Encoding rewritten. It fails
// (false) for 8-bit header fields, multipart bodies and binary encodings,
// which then fail with 5.6.3 rather than being sent as they are. The DKIM
// body hash no longer matches after conversion; RFC 6376 §5.3 advises
// signers to encode 7-bit, which is the real fix.
func toSevenBit(msg []byte) ([]byte, bool) {
	if !has8bit(msg) {
		return msg, true
	}
	sep := bytes.Index(msg, []byte("\r\n\r\n"))
	if sep < 0 {
		return nil, false
	}
	header, body := msg[:sep+2], msg[sep+4:]
	if has8bit(header) {
		return nil, false
	}
	lines, cte, ctype := unfoldFields(header)
	if mt, _, err := mime.ParseMediaType(ctype); err == nil && strings.HasPrefix(mt, "multipart/") {
		return nil, false
	}
	switch strings.ToLower(strings.TrimSpace(cte)) {
	case "", "7bit", "8bit":
	default:
		return nil, false
	}
	var out bytes.Buffer
	out.Grow(len(msg) + len(msg)/4)
	for _, l := range lines {
		if !hasFieldName(l, "content-transfer-encoding") {
			out.WriteString(l)
		}
	}
	out.WriteString("Content-Transfer-Encoding: quoted-printable\r\n\r\n")
	w := quotedprintable.NewWriter(&out)
	if _, err := w.Write(body); err != nil {
		return nil, false
	}
	if err := w.Close(); err != nil {
		return nil, false
	}
	if !bytes.HasSuffix(out.Bytes(), []byte("\r\n")) {
		out.WriteString("\r\n")
	}
	return out.Bytes(), true
}

// unfoldFields splits a header block into whole fields (with their
// continuation lines and CRLFs) and returns the values of
// Content-Transfer-Encoding and Content-Type.
func unfoldFields(header []byte) (fields []string, cte, ctype string) {
	for _, line := range strings.SplitAfter(string(header), "\r\n") {
		if line == "" {
			continue
		}
		if (line[0] == ' ' || line[0] == '\t') && len(fields) > 0 {
			fields[len(fields)-1] += line
			continue
		}
		fields = append(fields, line)
	}
	for _, f := range fields {
		name, val, ok := strings.Cut(f, ":")
		if !ok {
			continue
		}
		val = strings.Join(strings.Fields(val), " ")
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "content-transfer-encoding":
			cte = val
		case "content-type":
			ctype = val
		}
	}
	return fields, cte, ctype
}

func hasFieldName(field, name string) bool {
	n, _, ok := strings.Cut(field, ":")
	return ok && strings.EqualFold(strings.TrimSpace(n), name)
}
