package smtpclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"

	"github.com/emersion/go-smtp"
	"github.com/jetrelay/jetrelay/relay/netguard"
	"github.com/jetrelay/jetrelay/relay/safetext"
)

// Verdict is a classified failure: the reply to record and whether the
// failure is about the host or connection (so the next address or MX is
// tried in the same attempt) rather than about the message or recipient.
type Verdict struct {
	Reply
	NextHost bool
}

// Error is a failure jetrelay detected itself, already classified.
type Error struct {
	Verdict
	Err error // underlying cause, if any
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Reply.String() + ": " + e.Err.Error()
	}
	return e.Reply.String()
}

func (e *Error) Unwrap() error { return e.Err }

func newError(r Reply, nextHost bool, cause error) *Error {
	return &Error{Verdict: Verdict{Reply: r, NextHost: nextHost}, Err: cause}
}

// Classify maps any delivery error to a verdict (nil → 250 2.0.0):
//   - a remote *smtp.SMTPError keeps its code and whole (multiline) text; its
//     enhanced code is made consistent with the basic code's class; 421 is a
//     closing connection (RFC 5321 §3.8): next host;
//   - DNS: NXDOMAIN permanent 5.1.2, null MX permanent 5.1.10, SERVFAIL and
//     timeouts temporary 4.4.3;
//   - TCP: refused 4.4.1, reset/EOF 4.4.2, timeouts 4.4.2: next host;
//   - TLS handshake and certificate failures 4.7.5: next host;
//   - anything else: temporary 4.3.0, next host.
func Classify(err error) Verdict {
	if err == nil {
		return Verdict{Reply: replyOK}
	}
	var de *Error
	if errors.As(err, &de) {
		return de.Verdict
	}
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return Verdict{Reply: smtpReply(se), NextHost: se.Code == 421}
	}
	var dnsErr *DNSError
	if errors.As(err, &dnsErr) {
		return Verdict{Reply: withCause(dnsErr.reply(), dnsErr.Error())}
	}
	var denied *netguard.DeniedError
	if errors.As(err, &denied) {
		// The reply never names the address (it may reach the sender).
		return Verdict{Reply: replyDeniedNetwork, NextHost: true}
	}
	var tooLong *smtp.ReplyTooLongError
	if errors.As(err, &tooLong) || errors.Is(err, smtp.ErrTooLongLine) {
		// go-smtp stopped reading at its reply limits and closed the
		// connection (issue 12 point 1).
		return Verdict{Reply: replyBadReply, NextHost: true}
	}
	if errors.Is(err, context.Canceled) {
		return Verdict{Reply: ReplyShutdown}
	}
	r, ok := transportReply(err)
	if !ok {
		r = ReplyLocal
	}
	return Verdict{Reply: withCause(r, err.Error()), NextHost: true}
}

// transportReply classifies TCP and TLS failures.
func transportReply(err error) (Reply, bool) {
	var (
		cve *tls.CertificateVerificationError
		ua  x509.UnknownAuthorityError
		he  x509.HostnameError
		ci  x509.CertificateInvalidError
		rhe tls.RecordHeaderError
		ae  tls.AlertError
		ne  net.Error
	)
	switch {
	case errors.As(err, &cve), errors.As(err, &ua), errors.As(err, &he), errors.As(err, &ci),
		errors.As(err, &rhe), errors.As(err, &ae):
		return replyTLSFailed, true
	case errors.Is(err, syscall.ECONNREFUSED):
		return replyConnRefused, true
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return replyTimeout, true
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE), errors.Is(err, net.ErrClosed):
		return replyConnLost, true
	case strings.Contains(err.Error(), "tls: "):
		return replyTLSFailed, true
	}
	return Reply{}, false
}

// smtpReply turns a go-smtp error into a Reply, keeping multiline text
// whole and the enhanced code's class equal to the basic code's (RFC 3463 §2).
func smtpReply(se *smtp.SMTPError) Reply {
	r := Reply{Code: se.Code, Text: remoteText(se.Message)}
	class := se.Code / 100
	ec := se.EnhancedCode
	if ec == smtp.EnhancedCodeNotSet || ec == smtp.NoEnhancedCode {
		ec, r.Text = lineCodes(se.Message, ec)
	}
	switch {
	case ec == smtp.EnhancedCodeNotSet || ec == smtp.NoEnhancedCode || ec[0] < 2 || ec[0] > 5:
		if class == 2 || class == 4 || class == 5 {
			r.Enh = fmt.Sprintf("%d.0.0", class)
		}
	default:
		if ec[0] != class && (class == 4 || class == 5) {
			ec[0] = class
		}
		r.Enh = fmt.Sprintf("%d.%d.%d", ec[0], ec[1], ec[2])
	}
	if class != 2 && class != 4 && class != 5 {
		// A reply outside the expected classes (e.g. 354 where 250 was
		// due) is a protocol error: retry later.
		r = Reply{Code: 451, Enh: "4.5.0", Text: fmt.Sprintf("unexpected reply %d %s", se.Code, remoteText(se.Message))}
	}
	return r
}

// lineCodes finds an enhanced code at the start of the lines of a
// multiline reply whose first line has none (some servers, go-smtp's
// among them, put it on the last line only) and strips it from every line.
func lineCodes(text string, ec smtp.EnhancedCode) (smtp.EnhancedCode, string) {
	lines := strings.Split(text, "\n")
	found := false
	for i, l := range lines {
		first, rest, _ := strings.Cut(l, " ")
		var c smtp.EnhancedCode
		if n, err := fmt.Sscanf(first, "%d.%d.%d", &c[0], &c[1], &c[2]); err != nil || n != 3 || !enhRE.MatchString(first) {
			continue
		}
		ec, found = c, true
		lines[i] = rest
	}
	if !found {
		return ec, text
	}
	return ec, strings.Join(lines, "\n")
}

// withCause appends a cause to one of our replies. Causes may quote a
// remote server (a STARTTLS refusal, a protocol error naming the line), so
// they are made safe like any remote text.
func withCause(r Reply, cause string) Reply {
	r = r.WithCause(cause)
	r.Text = remoteText(r.Text)
	return r
}

// remoteText is the one place where text a remote server chose becomes
// part of a Reply, which is stored, logged, evented and quoted in DSNs:
// at most 4 KiB, control characters escaped (relay/safetext.Reply).
func remoteText(s string) string { return safetext.Reply(s) }
