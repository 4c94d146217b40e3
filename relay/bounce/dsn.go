package bounce

import (
	"bytes"
	"fmt"
	"mime"
	"mime/quotedprintable"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jetrelay/jetrelay/queue"
)

// DSN actions (RFC 3464 §2.3.3).
const (
	ActionFailed  = "failed"
	ActionDelayed = "delayed"
	ActionRelayed = "relayed"
)

// actionRemoved is jetrelay's own kind of failure notice: an operator
// deleted the entry from the queue (jetrelay queue delete). On the wire it
// is Action: failed; the text says who ended delivery, and no remote
// server is named, because none refused anything.
const actionRemoved = "removed"

// rfcAction is the RFC 3464 §2.3.3 action of the notice.
func (n *notice) rfcAction() string {
	if n.action == actionRemoved {
		return ActionFailed
	}
	return n.action
}

// dateLayout is the RFC 5322 §3.3 date-time used in headers and in the
// delivery-status fields (RFC 3464 §2.1.2).
const dateLayout = "Mon, 02 Jan 2006 15:04:05 -0700"

// defaultReturnMax applies when bounces.return_max_bytes is 0.
const defaultReturnMax = 256 << 10

// notice is everything one DSN says.
type notice struct {
	id       string // the DSN's queue id
	action   string
	env      *queue.Envelope
	body     []byte
	rcpts    []Result
	now      time.Time
	hostname string
	from     string
	maxAge   time.Duration
	retMax   int
}

// compose writes the DSN: RFC 5322 headers and a multipart/report
// (RFC 6522 §3) of a human-readable part, message/delivery-status
// (RFC 3464 §2) and the returned message or its headers. It returns the
// bytes (CRLF line endings) and whether they contain 8-bit octets.
func (n *notice) compose() ([]byte, bool) {
	full, cut := n.returned()
	boundary := "=_jetrelay-dsn-" + n.id
	for bytes.Contains(n.body, []byte(boundary)) {
		boundary += "_"
	}
	var w bytes.Buffer
	n.writeHeaders(&w, boundary)
	w.WriteString("This is a MIME-encapsulated delivery status notification (RFC 3464).\r\n")
	fmt.Fprintf(&w, "\r\n--%s\r\n", boundary)
	n.writeHuman(&w, cut)
	fmt.Fprintf(&w, "\r\n--%s\r\n", boundary)
	n.writeStatus(&w)
	fmt.Fprintf(&w, "\r\n--%s\r\n", boundary)
	eightBit := n.writeOriginal(&w, full)
	fmt.Fprintf(&w, "\r\n--%s--\r\n", boundary)
	return w.Bytes(), eightBit
}

// returned decides what of the original goes back: the whole message only
// in a failed DSN with RET=FULL (RFC 3461 §4.3) and within return_max_bytes.
// cut reports that RET=FULL was asked but the message was too large.
func (n *notice) returned() (full, cut bool) {
	if n.rfcAction() != ActionFailed || !strings.EqualFold(n.env.Ret, "FULL") {
		return false, false
	}
	if len(n.body) > n.retMax {
		return false, true
	}
	return true, false
}

func (n *notice) writeHeaders(w *bytes.Buffer, boundary string) {
	hdr := func(k, v string) { w.WriteString(fold(k+": "+v) + "\r\n") }
	hdr("From", "Mail Delivery System <"+n.from+">")
	hdr("To", "<"+n.env.From+">")
	hdr("Subject", encodeWord(n.subject()))
	hdr("Date", n.now.Format(dateLayout))
	hdr("Message-ID", "<"+n.id+".dsn@"+n.hostname+">")
	if id := clean(n.env.MsgID); id != "" {
		if !strings.HasPrefix(id, "<") {
			id = "<" + id + ">"
		}
		hdr("In-Reply-To", id)
		hdr("References", id)
	}
	hdr("Auto-Submitted", "auto-replied") // RFC 3834 §5
	hdr("MIME-Version", "1.0")
	hdr("Content-Type", `multipart/report; report-type=delivery-status; boundary="`+boundary+`"`)
	w.WriteString("\r\n")
}

func (n *notice) subject() string {
	who := n.rcpts[0].Rcpt.Addr
	if len(n.rcpts) > 1 {
		who = fmt.Sprintf("%s and %d more", who, len(n.rcpts)-1)
	}
	switch n.action {
	case ActionDelayed:
		return "Delivery delayed: still trying to reach " + who
	case ActionRelayed:
		return "Delivery status: relayed to " + who
	case actionRemoved:
		return "Undelivered mail: removed from the queue before delivery to " + who
	}
	return "Undelivered mail: could not deliver to " + who
}

// writeHuman writes the text/plain part (RFC 6522 §3): what happened, to
// whom, and each remote reply quoted.
func (n *notice) writeHuman(w *bytes.Buffer, cut bool) {
	var t strings.Builder
	fmt.Fprintf(&t, "This is the mail system at %s.\n\n", n.hostname)
	switch n.action {
	case ActionFailed:
		t.WriteString("Your message could not be delivered to the recipients below. It will not\n" +
			"be retried.\n")
	case actionRemoved:
		t.WriteString("Your message was removed from the queue by an operator of this mail system\n" +
			"before it was delivered to the recipients below. No receiving server\n" +
			"refused it; it will not be retried. Ask the operator, or send it again.\n")
	case ActionDelayed:
		fmt.Fprintf(&t, "Your message has not been delivered yet to the recipients below. It will\n"+
			"be retried until %s; you do not need to send it again.\n",
			n.env.Arrival.Add(n.maxAge).UTC().Format(dateLayout))
	case ActionRelayed:
		t.WriteString("Your message was handed to the next mail server for the recipients below.\n" +
			"That server does not send delivery notifications, so this is the last\n" +
			"confirmation you will get.\n")
	}
	for _, r := range n.rcpts {
		t.WriteString("\n" + n.humanLine(r))
	}
	if n.env.MsgID != "" {
		fmt.Fprintf(&t, "\nYour message's Message-ID: %s\n", clean(n.env.MsgID))
	}
	if cut {
		fmt.Fprintf(&t, "\nThe message is %d bytes, more than the %d bytes returned with a\n"+
			"notification, so only its headers are attached.\n", len(n.body), n.retMax)
	} else {
		t.WriteString("\nThe headers of your message are attached.\n")
	}
	writeText(w, t.String())
}

// humanLine says what happened to one recipient, the reply quoted.
func (n *notice) humanLine(r Result) string {
	server := "the receiving server"
	if r.MX != "" {
		server = clean(r.MX)
		if r.IP != "" {
			server += " [" + clean(r.IP) + "]"
		}
	}
	var lead string
	switch {
	case n.action == actionRemoved:
		lead = "removed from the queue by an operator"
	case n.action == ActionRelayed:
		lead = "accepted by " + server + ", which sends no delivery notifications"
	case n.action == ActionDelayed:
		lead = "not delivered yet; the last attempt failed at " + server
	case r.Temporary:
		lead = fmt.Sprintf("still failing after %s, so delivery was given up;\n    the last attempt failed at %s",
			shortDuration(n.maxAge), server)
	default:
		lead = "rejected by " + server
	}
	var t strings.Builder
	fmt.Fprintf(&t, "<%s>:\n    %s", clean(r.Rcpt.Addr), lead)
	if r.Text == "" && r.Code == 0 {
		return t.String() + " (status " + status(r) + ")\n"
	}
	t.WriteString(", which said:\n")
	for _, l := range strings.Split(diagnostic(r), "\n") {
		t.WriteString("    > " + l + "\n")
	}
	return t.String()
}

// writeText writes a text/plain part, quoted-printable if not plain ASCII.
func writeText(w *bytes.Buffer, s string) {
	s = strings.ReplaceAll(s, "\n", "\r\n")
	if isASCII(s) {
		w.WriteString("Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n\r\n")
		w.WriteString(s)
		return
	}
	w.WriteString("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n")
	qp := quotedprintable.NewWriter(w)
	_, _ = qp.Write([]byte(s))
	_ = qp.Close()
}

// writeStatus writes the message/delivery-status part (RFC 3464 §2):
// per-message fields, then one block per recipient.
func (n *notice) writeStatus(w *bytes.Buffer) {
	w.WriteString("Content-Type: message/delivery-status\r\n\r\n")
	f := func(k, v string) { w.WriteString(fold(k+": "+v) + "\r\n") }
	f("Reporting-MTA", "dns; "+n.hostname) // §2.2.2
	if id := clean(n.env.EnvID); id != "" {
		f("Original-Envelope-Id", id) // §2.2.1
	}
	f("Arrival-Date", n.env.Arrival.UTC().Format(dateLayout)) // §2.2.5
	for _, r := range n.rcpts {
		w.WriteString("\r\n")
		f("Final-Recipient", "rfc822; "+clean(r.Rcpt.Addr)) // §2.3.2
		if o := clean(r.Rcpt.ORCPT); o != "" {
			f("Original-Recipient", o) // §2.3.1, as given in ORCPT
		}
		f("Action", n.rfcAction()) // §2.3.3
		f("Status", status(r))     // §2.3.4
		if r.MX != "" {
			f("Remote-MTA", "dns; "+clean(r.MX)) // §2.3.5
		}
		if r.Text != "" || r.Code != 0 {
			f("Diagnostic-Code", "smtp; "+strings.ReplaceAll(diagnostic(r), "\n", " ")) // §2.3.6
		}
		last := r.Time
		if last.IsZero() {
			last = n.now
		}
		f("Last-Attempt-Date", last.UTC().Format(dateLayout)) // §2.3.7
		if n.action == ActionDelayed && n.maxAge > 0 {
			f("Will-Retry-Until", n.env.Arrival.Add(n.maxAge).UTC().Format(dateLayout)) // §2.3.9
		}
	}
}

// writeOriginal writes the whole message (message/rfc822) or its header
// section (text/rfc822-headers, RFC 6522 §4). It reports 8-bit content.
func (n *notice) writeOriginal(w *bytes.Buffer, full bool) bool {
	part, ctype := headerSection(n.body, n.retMax), "text/rfc822-headers"
	if full {
		part, ctype = n.body, "message/rfc822"
	}
	part = crlf(part)
	eightBit := !isASCII(string(part))
	cte := "7bit"
	if eightBit {
		cte = "8bit"
	}
	fmt.Fprintf(w, "Content-Type: %s\r\nContent-Transfer-Encoding: %s\r\n\r\n", ctype, cte)
	w.Write(part)
	if !bytes.HasSuffix(part, []byte("\r\n")) {
		w.WriteString("\r\n")
	}
	return eightBit
}

// headerSection returns msg's header section (up to the empty line),
// cut at a line boundary within max bytes.
func headerSection(msg []byte, max int) []byte {
	h := msg
	if i := bytes.Index(msg, []byte("\r\n\r\n")); i >= 0 {
		h = msg[:i+2]
	} else if i := bytes.Index(msg, []byte("\n\n")); i >= 0 {
		h = msg[:i+1]
	}
	if len(h) > max {
		h = h[:max]
		if i := bytes.LastIndexByte(h, '\n'); i >= 0 {
			h = h[:i+1]
		}
	}
	return h
}

// crlf turns bare LF into CRLF (the queue stores CRLF already; this keeps
// hand-made test input and odd bodies well-formed).
func crlf(b []byte) []byte {
	if !bytes.Contains(b, []byte("\n")) || bytes.Count(b, []byte("\r\n")) == bytes.Count(b, []byte("\n")) {
		return b
	}
	return bytes.ReplaceAll(bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n")), []byte("\n"), []byte("\r\n"))
}

// status returns the RFC 3463 status for r: its enhanced code, or one
// derived from the reply class (expired temporary failures: 4.4.7).
func status(r Result) string {
	if validEnh(r.Enh) {
		return r.Enh
	}
	switch {
	case r.Code >= 500:
		return "5.0.0"
	case r.Temporary && r.Code >= 400:
		return "4.0.0"
	case r.Temporary:
		return "4.4.7"
	}
	return "5.0.0"
}

func validEnh(s string) bool {
	p := strings.Split(s, ".")
	if len(p) != 3 || (p[0] != "2" && p[0] != "4" && p[0] != "5") {
		return false
	}
	for _, x := range p[1:] {
		if v, err := strconv.Atoi(x); err != nil || v < 0 || v > 999 {
			return false
		}
	}
	return true
}

// diagnostic returns the remote reply as "550 5.1.1 text", lines kept.
func diagnostic(r Result) string {
	text := clean(strings.ReplaceAll(r.Text, "\r\n", "\n"))
	code := strconv.Itoa(r.Code)
	if r.Code == 0 || strings.HasPrefix(text, code) {
		return text
	}
	if validEnh(r.Enh) && !strings.HasPrefix(text, r.Enh) {
		text = r.Enh + " " + text
	}
	return strings.TrimSpace(code + " " + text)
}

// clean drops control characters (keeping newlines) from text that came
// from outside, so it cannot break header or MIME structure.
func clean(s string) string {
	s = strings.ToValidUTF8(s, "?")
	return strings.TrimSpace(strings.Map(func(r rune) rune {
		if r == '\n' {
			return r
		}
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s))
}

// fold folds a header line at spaces to stay near 78 octets (RFC 5322
// §2.2.3). Runs of white space collapse to one space first, so no folded
// line is white space only.
func fold(line string) string {
	line = strings.Join(strings.Fields(line), " ")
	var out strings.Builder
	for len(line) > 78 {
		i := strings.LastIndexByte(line[:78], ' ')
		if i <= 0 {
			j := strings.IndexByte(line[1:], ' ')
			if j < 0 {
				break
			}
			i = j + 1
		}
		out.WriteString(line[:i] + "\r\n")
		line = line[i:]
	}
	out.WriteString(line)
	return out.String()
}

func encodeWord(s string) string {
	if isASCII(s) {
		return s
	}
	return mime.QEncoding.Encode("utf-8", s)
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// shortDuration writes whole hours as "48h" rather than "48h0m0s".
func shortDuration(d time.Duration) string {
	if d > 0 && d%time.Hour == 0 {
		return strconv.Itoa(int(d/time.Hour)) + "h"
	}
	return d.String()
}
