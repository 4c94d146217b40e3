package bounce

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"net/textproto"
	"strings"

	"github.com/jetrelay/jetrelay/queue"
)

// ARF feedback reports (RFC 5965): a multipart/report with
// report-type=feedback-report whose parts are a human-readable text, one
// message/feedback-report part of header-like fields (§3.1) and the
// original message or its header section (message/rfc822,
// text/rfc822-headers). ParseARF reads one with strict bounds: the input
// is hostile and arrives from any sender.
const (
	arfMaxParts      = 10       // MIME parts of a report (RFC 5965 §2 names three)
	arfMaxTopFields  = 300      // header fields of the report message itself
	arfMaxFields     = 100      // fields of the message/feedback-report part
	arfMaxOrigHeader = 64 << 10 // bytes of the original's header section read
	arfMaxReceived   = 30       // Received fields of the original looked at
	arfMaxText       = 200      // bytes kept of a free-text field (User-Agent, ...)
	arfMaxTypeLen    = 40       // a Feedback-Type token
)

// errNotARF means the message is not a feedback report at all (no
// multipart/report; report-type=feedback-report container).
var errNotARF = errors.New("not an ARF feedback report (RFC 5965)")

// arfError is a report that claims to be ARF but cannot be read; reason
// is safe to quote in an SMTP reply.
type arfError struct{ reason string }

func (e *arfError) Error() string { return "malformed ARF feedback report: " + e.reason }

func malformed(reason string) error { return &arfError{reason: reason} }

// Report is what an ARF feedback report says (RFC 5965 §3.1 fields).
type Report struct {
	// FeedbackType is the Feedback-Type, lower case: abuse, fraud, virus,
	// other, not-spam (RFC 6430), auth-failure (RFC 6591), or another token.
	FeedbackType string
	UserAgent    string
	Version      string
	// OriginalMailFrom is the original's envelope sender: our VERP
	// address when the report is about our mail.
	OriginalMailFrom string
	// OriginalRcptTo are the Original-Rcpt-To addresses (often redacted
	// or absent).
	OriginalRcptTo []string
	ArrivalDate    string
	ReportedDomain string
	SourceIP       string
	// Original is what the attached original's header section says.
	Original OriginalHeaders
}

// OriginalHeaders are the fields of the reported message that can tie the
// report to a queue id and recipient.
type OriginalHeaders struct {
	Present    bool     // a message/rfc822 or text/rfc822-headers part was there
	ReturnPath string   // Return-Path address (the receiver's copy of MAIL FROM)
	MessageID  string   // Message-ID, as written
	To         []string // addresses of the first To field (when not redacted)
	Received   []string // Received fields, top first, whitespace folded
}

// ParseARF reads msg as an RFC 5965 feedback report. It returns errNotARF
// for anything that is not one, an *arfError for a report it cannot read
// (no or two feedback-report parts, no Feedback-Type, parts or fields over
// the bounds above, a broken MIME structure before the feedback part),
// and never panics. An original cut short (providers truncate) is used as
// far as it goes.
func ParseARF(msg []byte) (*Report, error) {
	m, err := mail.ReadMessage(bytes.NewReader(msg))
	if err != nil {
		return nil, errNotARF
	}
	ctype, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil || ctype != "multipart/report" || !strings.EqualFold(params["report-type"], "feedback-report") {
		return nil, errNotARF
	}
	if fieldCount(textproto.MIMEHeader(m.Header)) > arfMaxTopFields {
		return nil, malformed("more than 300 header fields")
	}
	if params["boundary"] == "" {
		return nil, malformed("multipart/report without a boundary")
	}
	r := &Report{}
	seen, err := r.readParts(multipart.NewReader(m.Body, params["boundary"]))
	if err != nil {
		return nil, err
	}
	if !seen {
		return nil, malformed("no message/feedback-report part")
	}
	return r, nil
}

// readParts visits the report's parts; seen says whether the
// feedback-report part was read.
func (r *Report) readParts(mr *multipart.Reader) (seen bool, err error) {
	for i := 0; ; i++ {
		p, err := mr.NextRawPart()
		if errors.Is(err, io.EOF) {
			return seen, nil
		}
		if err != nil {
			if seen { // a truncated original: keep what was read
				return true, nil
			}
			return false, malformed("broken MIME structure")
		}
		if i >= arfMaxParts {
			return seen, malformed("more than 10 MIME parts")
		}
		ctype, _, err := mime.ParseMediaType(p.Header.Get("Content-Type"))
		if err != nil {
			ctype = "text/plain"
		}
		body := decodeCTE(p.Header, p)
		switch ctype {
		case "message/feedback-report":
			if seen {
				return true, malformed("two message/feedback-report parts")
			}
			if err := r.readFeedback(body); err != nil {
				return true, err
			}
			seen = true
		case "message/rfc822", "text/rfc822-headers", "message/rfc822-headers", "message/global",
			"message/global-headers":
			if !r.Original.Present {
				r.Original = readOriginal(body)
			}
		}
	}
}

// readFeedback parses the message/feedback-report part (RFC 5965 §3.1).
// Feedback-Type is required, once; the other required fields (User-Agent,
// Version) are taken when present: feedback loops omit them, and the
// report is still a complaint.
func (r *Report) readFeedback(body io.Reader) error {
	raw, err := io.ReadAll(io.LimitReader(body, maxFeedbackBytes+1))
	if err != nil && len(raw) == 0 {
		return malformed("unreadable message/feedback-report part")
	}
	if len(raw) > maxFeedbackBytes {
		return malformed("message/feedback-report part over 16 KiB")
	}
	f, err := textproto.NewReader(bufio.NewReader(bytes.NewReader(raw))).ReadMIMEHeader()
	if err != nil && !errors.Is(err, io.EOF) {
		return malformed("message/feedback-report fields are not header fields")
	}
	if fieldCount(f) > arfMaxFields {
		return malformed("more than 100 fields in the message/feedback-report part")
	}
	types := f.Values("Feedback-Type")
	if len(types) != 1 {
		return malformed("message/feedback-report needs exactly one Feedback-Type field")
	}
	if r.FeedbackType = feedbackToken(types[0]); r.FeedbackType == "" {
		return malformed("Feedback-Type is not a token")
	}
	r.UserAgent = field(f.Get("User-Agent"))
	r.Version = field(f.Get("Version"))
	r.OriginalMailFrom = angleAddr(f.Get("Original-Mail-From"))
	r.ArrivalDate = field(f.Get("Arrival-Date"))
	r.ReportedDomain = field(f.Get("Reported-Domain"))
	r.SourceIP = field(f.Get("Source-IP"))
	for _, v := range f.Values("Original-Rcpt-To") {
		if len(r.OriginalRcptTo) >= maxAddrs {
			break
		}
		if a := angleAddr(v); a != "" {
			r.OriginalRcptTo = append(r.OriginalRcptTo, a)
		}
	}
	return nil
}

// readOriginal reads the header section of the attached original, at most
// arfMaxOrigHeader bytes; a cut-off section is used as far as it goes.
func readOriginal(body io.Reader) OriginalHeaders {
	tp := textproto.NewReader(bufio.NewReader(io.LimitReader(body, arfMaxOrigHeader)))
	h, _ := tp.ReadMIMEHeader()
	o := OriginalHeaders{Present: true, ReturnPath: angleAddr(h.Get("Return-Path"))}
	if id := strings.TrimSpace(h.Get("Message-Id")); len(id) <= maxMsgIDLen {
		o.MessageID = id
	}
	if to := h.Get("To"); to != "" && len(to) <= 4096 {
		if list, err := mail.ParseAddressList(to); err == nil {
			for _, a := range list {
				if len(o.To) < maxAddrs && validAddr(a.Address) {
					o.To = append(o.To, a.Address)
				}
			}
		}
	}
	for _, v := range h.Values("Received") {
		if len(o.Received) >= arfMaxReceived {
			break
		}
		o.Received = append(o.Received, strings.Join(strings.Fields(v), " "))
	}
	return o
}

// maxMsgIDLen bounds a Message-ID taken from a report (RFC 5322 §2.1.1's
// line limit).
const maxMsgIDLen = 998

func fieldCount(h textproto.MIMEHeader) int {
	n := 0
	for _, v := range h {
		n += len(v)
	}
	return n
}

// feedbackToken returns the lower-cased Feedback-Type token (RFC 5965
// §7.3's registry names: letters, digits, '-'), or "".
func feedbackToken(v string) string {
	t := strings.ToLower(strings.TrimSpace(v))
	if t == "" || len(t) > arfMaxTypeLen {
		return ""
	}
	for _, c := range t {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' && c != '_' {
			return ""
		}
	}
	return t
}

// angleAddr returns the address of "<user@example.com>" or
// "user@example.com" (RFC 5965 §3.1 Original-Mail-From/-Rcpt-To), or "".
func angleAddr(v string) string {
	a := strings.TrimSpace(v)
	if i := strings.IndexByte(a, '<'); i >= 0 {
		if j := strings.IndexByte(a[i:], '>'); j > 0 {
			a = a[i+1 : i+j]
		}
	}
	if !validAddr(a) {
		return ""
	}
	return a
}

// field folds whitespace, drops control characters and invalid UTF-8 and
// cuts a free-text field to arfMaxText bytes.
func field(v string) string {
	v = strings.Join(strings.Fields(v), " ")
	v = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return -1
		}
		return r
	}, strings.ToValidUTF8(v, ""))
	if len(v) > arfMaxText {
		v = strings.ToValidUTF8(v[:arfMaxText], "")
	}
	return v
}

// jetrelayID returns the queue id the original carries in jetrelay's own
// fields: the Received field submission prepends ("by <host> (jetrelay)
// ... id <queue id>"), else a Message-ID submission generated
// ("<queue id@host>"), for host. "" when neither is there.
func (o OriginalHeaders) jetrelayID(host string) string {
	for _, rv := range o.Received {
		if !strings.Contains(rv, " (jetrelay) ") || !strings.Contains(strings.ToLower(rv), "by "+strings.ToLower(host)+" ") {
			continue
		}
		f := strings.Fields(strings.ReplaceAll(rv, ";", " "))
		for i := 0; i+1 < len(f); i++ {
			if f[i] == "id" && queue.ValidID(f[i+1]) {
				return f[i+1]
			}
		}
	}
	id := strings.TrimSuffix(strings.TrimPrefix(o.MessageID, "<"), ">")
	if local, dom, ok := strings.Cut(id, "@"); ok && strings.EqualFold(dom, host) && queue.ValidID(local) {
		return local
	}
	return ""
}

// receivedFor returns the recipient jetrelay's Received field names ("for
// <rcpt>", written when the message had one recipient), or "".
func (o OriginalHeaders) receivedFor() string {
	for _, rv := range o.Received {
		if !strings.Contains(rv, " (jetrelay) ") {
			continue
		}
		if _, rest, ok := strings.Cut(rv, " for <"); ok {
			if a, _, ok := strings.Cut(rest, ">"); ok && validAddr(a) {
				return a
			}
		}
	}
	return ""
}
