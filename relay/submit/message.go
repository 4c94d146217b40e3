package submit

import (
	"bytes"
	"crypto/tls"
	"io"
	"mime"
	"net/mail"
	"strings"
	"time"
)

// maxHeaderFields bounds the number of header fields (DESIGN.md: bounded
// reads everywhere, header count included).
const maxHeaderFields = 1000

// canonical reports whether msg needs nothing from normalize: no NUL, every
// line ends in CRLF (the last one too) with no other CR, none longer than
// maxLine (0 = unlimited). It scans with bytes.IndexByte instead of a byte
// loop; anything else takes normalize's loop, which also names the error.
// long reports a line over 998 octets (RFC 5322 §2.1.1) in the same pass.
func canonical(msg []byte, maxLine int) (ok, long bool) {
	if bytes.IndexByte(msg, 0) >= 0 {
		return false, false
	}
	for len(msg) > 0 {
		i := bytes.IndexByte(msg, '\n')
		if i < 1 || msg[i-1] != '\r' {
			return false, false
		}
		line := msg[:i-1]
		if (maxLine > 0 && len(line) > maxLine) || bytes.IndexByte(line, '\r') >= 0 {
			return false, false
		}
		long = long || len(line) > maxTextLine
		msg = msg[i+1:]
	}
	return true, long
}

// normalize returns msg with every line ending in CRLF (RFC 5322 §2.3).
// Bare CR and bare LF become CRLF, or errBareNewline when reject is set; a
// NUL byte is errNUL; a line longer than maxLine octets (without its CRLF)
// is errLineTooLong. A final line without CRLF gets one. msg is returned
// as it is (no copy) when nothing needs changing.
func normalize(msg []byte, reject bool, maxLine int) ([]byte, error) {
	out, _, err := normalizeLong(msg, reject, maxLine)
	return out, err
}

// normalizeLong is normalize that also reports whether a line is longer
// than 998 octets; for a canonical message (the common case) it costs one
// comparison per line.
func normalizeLong(msg []byte, reject bool, maxLine int) (out []byte, long bool, err error) {
	if ok, long := canonical(msg, maxLine); ok {
		return msg, long, nil
	}
	out, err = normalizeLoop(msg, reject, maxLine)
	if err != nil {
		return nil, false, err
	}
	return out, hasLongLine(out), nil
}

// normalizeLoop is normalize byte by byte.
func normalizeLoop(msg []byte, reject bool, maxLine int) ([]byte, error) {
	var out []byte // nil until the first rewrite
	lineLen := 0
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		switch {
		case c == '\r' && i+1 < len(msg) && msg[i+1] == '\n':
			if out != nil {
				out = append(out, '\r', '\n')
			}
			i++
			lineLen = 0
		case c == '\r' || c == '\n':
			if reject {
				return nil, errBareNewline
			}
			if out == nil {
				out = make([]byte, 0, len(msg)+len(msg)/32+2)
				out = append(out, msg[:i]...)
			}
			out = append(out, '\r', '\n')
			lineLen = 0
		case c == 0:
			return nil, errNUL
		default:
			lineLen++
			if maxLine > 0 && lineLen > maxLine {
				return nil, errLineTooLong
			}
			if out != nil {
				out = append(out, c)
			}
		}
	}
	if out == nil {
		out = msg
	}
	if len(out) > 0 && !bytes.HasSuffix(out, []byte("\r\n")) {
		if len(out) == len(msg) && &out[0] == &msg[0] {
			out = append(make([]byte, 0, len(msg)+2), msg...)
		}
		out = append(out, '\r', '\n')
	}
	return out, nil
}

// headerInfo is what submission needs from a message's header section.
type headerInfo struct {
	From      []string // values of every From: field, unfolded
	MessageID []string
	Date      int  // number of Date: fields
	Meta      bool // an X-Jetrelay-Meta-<key> or X-Jetrelay-Tag field (meta.go)
}

// scanHeader reads the header section of a CRLF-normalised message
// (RFC 5322 §2.2): fields up to the first empty line or the end. A line that
// is neither a field nor a continuation is errBadHeader (a lenient reader
// might otherwise see a second From: that we did not); more than maxBytes
// octets or maxHeaderFields fields is errHeaderTooBig.
func scanHeader(msg []byte, maxBytes int) (headerInfo, error) {
	var h headerInfo
	var cur *string // value being continued
	fields := 0
	for pos := 0; pos < len(msg); {
		end := bytes.Index(msg[pos:], []byte("\r\n"))
		if end < 0 {
			end = len(msg) - pos
		}
		line := msg[pos : pos+end]
		pos += end + 2
		if maxBytes > 0 && pos > maxBytes {
			return h, errHeaderTooBig
		}
		if len(line) == 0 {
			return h, nil
		}
		if line[0] == ' ' || line[0] == '\t' {
			if fields == 0 {
				return h, errBadHeader
			}
			if cur != nil {
				*cur += string(line)
			}
			continue
		}
		colon := bytes.IndexByte(line, ':')
		if colon < 0 {
			return h, errBadHeader
		}
		name := strings.TrimRight(string(line[:colon]), " \t")
		if !validFieldName(name) {
			return h, errBadHeader
		}
		if fields++; fields > maxHeaderFields {
			return h, errHeaderTooBig
		}
		cur = nil
		value := string(line[colon+1:])
		lname := strings.ToLower(name)
		h.Meta = h.Meta || isMetaField(lname)
		switch lname {
		case "from":
			h.From = append(h.From, value)
			cur = &h.From[len(h.From)-1]
		case "message-id":
			h.MessageID = append(h.MessageID, value)
			cur = &h.MessageID[len(h.MessageID)-1]
		case "date":
			h.Date++
		}
	}
	return h, nil
}

// validFieldName checks RFC 5322 §3.6.8 ftext.
func validFieldName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 33 || s[i] > 126 || s[i] == ':' {
			return false
		}
	}
	return true
}

// addrParser reads From: fields; unknown charsets in encoded display names
// are passed through, since only the addresses matter here.
var addrParser = &mail.AddressParser{WordDecoder: &mime.WordDecoder{
	CharsetReader: func(_ string, r io.Reader) (io.Reader, error) { return r, nil },
}}

// fromAddresses returns the addresses of the single From: field
// (RFC 5322 §3.6.2: exactly one From:, a mailbox-list).
func fromAddresses(h headerInfo) ([]string, error) {
	if len(h.From) != 1 {
		return nil, errNoFrom
	}
	list, err := addrParser.ParseList(strings.TrimSpace(h.From[0]))
	if err != nil || len(list) == 0 {
		return nil, errBadFrom
	}
	out := make([]string, len(list))
	for i, a := range list {
		out[i] = a.Address
	}
	return out, nil
}

// stamp is what goes into the Received: field.
type stamp struct {
	Helo     string
	IP       string
	Host     string
	TLS      *tls.ConnectionState
	User     string
	ID       string
	Rcpt     string // only for a single-recipient message (privacy)
	SMTPUTF8 bool
	Time     time.Time
}

// received renders a Received: field in RFC 5321 §4.4 form, protocol names
// from RFC 3848 and RFC 6531 §3.7.3, TLS and authentication as comments.
func received(s stamp) string {
	proto := "ESMTPA"
	if s.TLS != nil {
		proto = "ESMTPSA"
	}
	if s.SMTPUTF8 {
		proto = "UTF8SMTPA"
		if s.TLS != nil {
			proto = "UTF8SMTPSA"
		}
	}
	var b strings.Builder
	b.WriteString("Received: from " + sanitize(s.Helo, 255) + " (" + ipLiteral(s.IP) + ")\r\n")
	b.WriteString("\tby " + s.Host + " (jetrelay) with " + proto + "\r\n")
	if s.TLS != nil {
		b.WriteString("\t(version=" + tlsVersionName(s.TLS.Version) +
			" cipher=" + cipherSuiteName(s.TLS.CipherSuite) + ")\r\n")
	}
	if s.User != "" { // only with submission.received_user (stampUser)
		b.WriteString("\t(authenticated user " + sanitize(s.User, 64) + ")\r\n")
	}
	b.WriteString("\tid " + s.ID)
	if s.Rcpt != "" {
		b.WriteString("\r\n\tfor <" + s.Rcpt + ">")
	}
	b.WriteString(";\r\n\t" + s.Time.Format(time.RFC1123Z) + "\r\n")
	return b.String()
}

// ipLiteral renders an IP as an RFC 5321 §4.1.3 address literal.
func ipLiteral(ip string) string {
	if strings.Contains(ip, ":") {
		return "[IPv6:" + ip + "]"
	}
	return "[" + ip + "]"
}
