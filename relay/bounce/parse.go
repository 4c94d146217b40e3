package bounce

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"net/textproto"
	"regexp"
	"strings"
)

// Parser limits: the input is hostile (DESIGN.md "Input is hostile").
const (
	maxParts         = 20       // MIME parts looked at
	maxDepth         = 3        // nested multiparts followed
	maxStatusBlock   = 100      // per-recipient blocks in one delivery-status part
	maxTextScan      = 64 << 10 // bytes of plain text scanned for a bounce
	maxAddrs         = 50       // addresses collected from plain text
	maxFeedbackBytes = 16 << 10 // of a message/feedback-report part
)

// Bounce is what an incoming bounce message says.
type Bounce struct {
	// DSN is true when the message carried an RFC 3464 delivery-status part.
	DSN   bool
	Rcpts []BouncedRcpt
}

// BouncedRcpt is one recipient a bounce reports on.
type BouncedRcpt struct {
	Addr       string // Final-Recipient (DSN) or an address named in the text
	Original   string // Original-Recipient address, if given
	Action     string // RFC 3464 §2.3.3 action, lower case; "failed" for text bounces
	Status     string // RFC 3463 status, e.g. 5.1.1
	Diagnostic string // Diagnostic-Code text or the matching text line
	RemoteMTA  string
}

// Permanent reports whether the recipient failed for good.
func (r BouncedRcpt) Permanent() bool {
	return r.Action == ActionFailed && strings.HasPrefix(r.Status, "5.")
}

// ParseBounce reads a bounce (ARF feedback reports are ParseARF's): an RFC 3464 DSN (multipart/report,
// RFC 6522) if there is one, else a plain-text bounce that names a
// permanent status (5.x.x, or a 5xx reply line) and the recipients. It
// never panics; what it cannot read it leaves out. ok is false when the
// message says nothing usable.
func ParseBounce(msg []byte) (b Bounce, ok bool) {
	m, err := mail.ReadMessage(bytes.NewReader(msg))
	if err != nil {
		return Bounce{}, false
	}
	var text strings.Builder
	walkParts(textproto.MIMEHeader(m.Header), m.Body, 0, new(int), &b, &text)
	if len(b.Rcpts) > 0 {
		b.DSN = true
		return b, true
	}
	b.Rcpts = parseTextBounce(text.String())
	return b, len(b.Rcpts) > 0
}

// walkParts visits the MIME tree: delivery-status parts are parsed, plain
// text is collected (for the text fallback), returned messages are skipped.
func walkParts(h textproto.MIMEHeader, body io.Reader, depth int, seen *int, b *Bounce, text *strings.Builder) {
	*seen++
	if *seen > maxParts {
		return
	}
	ctype, params, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil {
		ctype = "text/plain"
	}
	body = decodeCTE(h, body)
	switch {
	case strings.HasPrefix(ctype, "multipart/"):
		if depth >= maxDepth || params["boundary"] == "" {
			return
		}
		mr := multipart.NewReader(body, params["boundary"])
		for {
			p, err := mr.NextRawPart()
			if err != nil {
				return
			}
			walkParts(p.Header, p, depth+1, seen, b, text)
		}
	case ctype == "message/delivery-status" || ctype == "message/global-delivery-status":
		b.Rcpts = append(b.Rcpts, parseDeliveryStatus(body)...)
	case ctype == "text/plain" && text.Len() < maxTextScan:
		buf, _ := io.ReadAll(io.LimitReader(body, int64(maxTextScan-text.Len())))
		text.Write(buf)
		text.WriteByte('\n')
	}
}

// decodeCTE undoes base64 and quoted-printable transfer encodings.
func decodeCTE(h textproto.MIMEHeader, r io.Reader) io.Reader {
	switch strings.ToLower(strings.TrimSpace(h.Get("Content-Transfer-Encoding"))) {
	case "base64":
		return base64.NewDecoder(base64.StdEncoding, r) // ignores CR and LF
	case "quoted-printable":
		return quotedprintable.NewReader(r)
	}
	return r
}

// parseDeliveryStatus reads the per-message block and then one block per
// recipient (RFC 3464 §2.1).
func parseDeliveryStatus(r io.Reader) []BouncedRcpt {
	tp := textproto.NewReader(bufio.NewReader(r))
	if _, err := tp.ReadMIMEHeader(); err != nil { // per-message fields
		return nil
	}
	var out []BouncedRcpt
	for i := 0; i < maxStatusBlock; i++ {
		f, err := tp.ReadMIMEHeader()
		if rc, ok := recipientBlock(f); ok {
			out = append(out, rc)
		}
		if err != nil {
			break
		}
	}
	return out
}

func recipientBlock(f textproto.MIMEHeader) (BouncedRcpt, bool) {
	rc := BouncedRcpt{
		Addr:       typedAddr(f.Get("Final-Recipient")),
		Original:   typedAddr(f.Get("Original-Recipient")),
		Action:     strings.ToLower(strings.TrimSpace(f.Get("Action"))),
		Status:     firstField(f.Get("Status")),
		Diagnostic: afterType(f.Get("Diagnostic-Code")),
		RemoteMTA:  afterType(f.Get("Remote-MTA")),
	}
	if rc.Addr == "" || rc.Action == "" {
		return rc, false
	}
	return rc, true
}

// typedAddr returns the address of "rfc822; user@example.com".
func typedAddr(v string) string {
	a := afterType(v)
	a = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(a), "<"), ">")
	if !validAddr(a) {
		return ""
	}
	return a
}

// afterType strips the "type;" prefix of a typed field (RFC 3464 §2.1.2).
func afterType(v string) string {
	if _, rest, ok := strings.Cut(v, ";"); ok {
		v = rest
	}
	return strings.TrimSpace(strings.Join(strings.Fields(v), " "))
}

func firstField(v string) string {
	f := strings.Fields(v)
	if len(f) == 0 || !validEnh(f[0]) {
		return ""
	}
	return f[0]
}

var (
	enhRE   = regexp.MustCompile(`\b5\.\d{1,3}\.\d{1,3}\b`)
	replyRE = regexp.MustCompile(`(?m)^\s*(?:[^:\n]{0,80}:\s*)?(5[0-5]\d)[ -]`)
	addrRE  = regexp.MustCompile(`[A-Za-z0-9.!#$%&'*+/=?^_{|}~-]{1,64}@` +
		`[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)+`)
)

// parseTextBounce finds a permanent status (an RFC 3463 5.x.x code, or a
// 5xx reply at the start of a line) and every address the text names:
// each address becomes a failed recipient with that status. The caller
// keeps only the address it expected (the VERP token's recipient).
func parseTextBounce(text string) []BouncedRcpt {
	status, line := "", ""
	if loc := enhRE.FindStringIndex(text); loc != nil {
		status, line = text[loc[0]:loc[1]], lineAt(text, loc[0])
	} else if m := replyRE.FindStringSubmatchIndex(text); m != nil {
		status, line = "5.0.0", lineAt(text, m[2])
	}
	if status == "" {
		return nil
	}
	var out []BouncedRcpt
	seen := map[string]bool{}
	for _, a := range addrRE.FindAllString(text, maxAddrs) {
		n := NormalizeAddr(a)
		if seen[n] {
			continue
		}
		seen[n] = true
		out = append(out, BouncedRcpt{Addr: a, Action: ActionFailed, Status: status, Diagnostic: line})
	}
	return out
}

func lineAt(text string, i int) string {
	start := strings.LastIndexByte(text[:i], '\n') + 1
	end := strings.IndexByte(text[i:], '\n')
	if end < 0 {
		end = len(text) - i
	}
	l := strings.TrimSpace(text[start : i+end])
	if len(l) > 400 {
		l = l[:400]
	}
	return strings.ToValidUTF8(l, "?")
}
