package submit

import (
	"fmt"
	"time"

	"github.com/emersion/go-smtp"
)

// Every reply this package sends, by name (RFC 5321 §4.2 codes, RFC 3463
// enhanced codes). Messages are the client-visible text.
var (
	// Authentication (RFC 4954 §6).
	errAuthRequired  = reply(530, 5, 7, 0, "authentication required")
	errAuthFailed    = reply(535, 5, 7, 8, "authentication credentials invalid")
	errAuthBanned    = reply(454, 4, 7, 0, "too many authentication failures from your address, try again later")
	errAuthMalformed = reply(501, 5, 5, 2, "malformed AUTH response")
	errAuthMechanism = reply(504, 5, 5, 4, "unsupported authentication mechanism (use PLAIN or LOGIN)")
	errAuthNeedsTLS  = reply(530, 5, 7, 0, "must issue a STARTTLS command first")
	errUserGone      = reply(530, 5, 7, 0, "user is no longer configured, authenticate again")

	// The auth brake (brake.go): a (user, client) ban leaves other users
	// of the client alone; an unreadable bucket falls back to per-node counts.
	errAuthUserBanned = reply(454, 4, 7, 0,
		"too many authentication failures for this user from your address, try again later")

	// Sender and recipients.
	errSenderDenied = reply(553, 5, 7, 1, "sender address not allowed for this user")
	errNullSender   = reply(553, 5, 7, 1, "null sender not allowed for this user")
	errBadSender    = reply(501, 5, 1, 7, "bad sender address syntax")
	errBadRcpt      = reply(501, 5, 1, 3, "bad recipient address syntax")
	errRcptLiteral  = reply(550, 5, 1, 2, "address literals are not accepted as recipients")
	errNeedUTF8     = reply(553, 5, 6, 7, "non-ASCII address requires SMTPUTF8")
	errRate         = reply(451, 4, 7, 1, "sending rate exceeded, try again later")
	errBadORCPT     = reply(501, 5, 5, 4, "malformed ORCPT parameter")
	errNoTxn        = reply(503, 5, 5, 1, "bad sequence of commands")

	// A command verb that is not alphabetic ASCII (RFC 5321 §4.1.1): the
	// client is not speaking SMTP; the connection is closed.
	errBadVerb = reply(500, 5, 5, 2, "syntax error, command unrecognized, closing connection")

	// EHLO (RFC 5321 §4.1.1.1).
	errBadHelo = reply(501, 5, 5, 4, "invalid EHLO argument: a domain name or address literal is required")

	// Message content.
	errHeaderTooBig   = reply(552, 5, 3, 4, "message header section too large")
	errBareNewline    = reply(550, 5, 6, 0, "message contains bare CR or LF line endings (RFC 5322 §2.3)")
	errNUL            = reply(550, 5, 6, 0, "message contains NUL characters")
	errLineTooLong    = reply(554, 5, 6, 0, "message line too long (RFC 5322 §2.1.1)")
	errBadHeader      = reply(550, 5, 6, 0, "malformed message header section")
	errNoFrom         = reply(550, 5, 6, 0, "message must have exactly one From: header field (RFC 5322 §3.6)")
	errBadFrom        = reply(550, 5, 6, 0, "unparseable From: header field")
	errFromDenied     = reply(550, 5, 7, 1, "header From: address not allowed for this user")
	errDataTimeout    = reply(421, 4, 4, 2, "message transfer took too long, closing connection")
	errTransferFailed = reply(451, 4, 3, 0, "message transfer aborted")
	errInflight       = reply(452, 4, 3, 1, "insufficient system storage for the message right now, try again later")
	errLongLine       = reply(554, 5, 6, 0, "message line longer than 998 octets (RFC 5322 §2.1.1)")
	errLongHeader     = reply(554, 5, 6, 0, "header line longer than 998 octets cannot be folded (RFC 5322 §2.2.3)")
	errLongSigned     = reply(554, 5, 6, 0, "line longer than 998 octets in signed or encrypted content, cannot re-encode")

	// Storage and signing.
	errStore    = reply(451, 4, 3, 0, "could not store the message, try again later")
	errSign     = reply(451, 4, 3, 0, "could not sign the message, try again later")
	errDeadline = reply(451, 4, 4, 5, "storage is too slow right now, try again later")
)

// Lines written directly on a connection (before or instead of go-smtp).
const (
	lineTooManyConns  = "421 4.7.0 %s too many connections, try again later\r\n"
	lineTooManyFromIP = "421 4.7.0 %s too many connections from your address, try again later\r\n"
	lineBanned        = "421 4.7.0 %s too many authentication failures from your address, try again later\r\n"
	lineIdleCommands  = "421 4.7.0 %s too many commands without a transaction, closing connection\r\n"
	lineSessionOver   = "421 4.4.2 %s session time limit reached, closing connection\r\n"
	linePreAuthOver   = "421 4.4.2 %s time limit for authenticating reached, closing connection\r\n"
	lineShutdown      = "421 4.3.2 %s service shutting down, try again later\r\n"
)

func reply(code, class, subject, detail int, msg string) *smtp.SMTPError {
	return &smtp.SMTPError{Code: code, EnhancedCode: smtp.EnhancedCode{class, subject, detail}, Message: msg}
}

// queuedReply is the success reply to DATA/BDAT: the queue id is the id every
// later log line and CLI output uses.
func queuedReply(id string) *smtp.SMTPError {
	return reply(250, 2, 0, 0, "OK: queued as "+id)
}

// pausedReply refuses MAIL of a user the bounce-rate guard paused
// (paused.go): "451 4.7.1 sending paused: bounce rate 11.2% over 24h".
func pausedReply(reason string) *smtp.SMTPError {
	return reply(451, 4, 7, 1, "sending paused: "+reason)
}

// tooBigReply refuses a message over max_message_bytes (RFC 1870 §6.1,
// RFC 3463 5.3.4), naming the limit as the go-smtp fork's SIZE refusal
// at MAIL does (third_party/go-smtp patch 0008).
func tooBigReply(limit int64) *smtp.SMTPError {
	return reply(552, 5, 3, 4, fmt.Sprintf("message exceeds the size limit of %d bytes", limit))
}

// suppressedReply refuses a recipient on the suppression list.
func suppressedReply(since time.Time) *smtp.SMTPError {
	return reply(550, 5, 1, 1, "recipient suppressed after hard bounce on "+since.UTC().Format("2006-01-02"))
}

// internalReply hides an internal error behind an id that the log line carries.
func internalReply(id string) *smtp.SMTPError {
	return reply(451, 4, 3, 0, fmt.Sprintf("internal error, try again (id=%s)", id))
}

// enh formats an enhanced status code for the smtp_enh log field.
func enh(e *smtp.SMTPError) string {
	c := e.EnhancedCode
	if c == smtp.NoEnhancedCode || c == smtp.EnhancedCodeNotSet {
		return ""
	}
	return fmt.Sprintf("%d.%d.%d", c[0], c[1], c[2])
}
