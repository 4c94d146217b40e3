package smtpclient

import "github.com/jetrelay/jetrelay/relay/outcome"

// Reply is the shared SMTP outcome type (relay/outcome).
type Reply = outcome.Reply

// Replies the client makes up for failures that produced no remote reply
// (RFC 3463 enhanced codes, RFC 5248 registry). The basic code follows the
// enhanced code's class. This is the one catalogue of such codes for an
// outbound conversation; relay/deliver adds the few it makes itself
// (busy, unreachable) in its own codes.go.
var (
	replyOK     = Reply{Code: 250, Enh: "2.0.0", Text: "OK"}
	replyRcptOK = Reply{Code: 250, Enh: "2.1.5", Text: "recipient ok"}
	replyNullMX = Reply{Code: 556, Enh: "5.1.10",
		Text: "recipient domain has a null MX (RFC 7505): it accepts no mail"}
	replyBadDomain   = Reply{Code: 550, Enh: "5.1.2", Text: "recipient domain is not a valid domain name"}
	replyNXDomain    = Reply{Code: 550, Enh: "5.1.2", Text: "recipient domain does not exist (NXDOMAIN)"}
	replyNoAddress   = Reply{Code: 550, Enh: "5.4.4", Text: "recipient domain has neither MX nor address records"}
	replyDNSTemp     = Reply{Code: 451, Enh: "4.4.3", Text: "DNS lookup failed temporarily"}
	replyNoUsableMX  = Reply{Code: 451, Enh: "4.4.4", Text: "no usable MX host (all invalid or without addresses)"}
	replyConnRefused = Reply{Code: 451, Enh: "4.4.1", Text: "connection refused"}
	replyNoAnswer    = Reply{Code: 451, Enh: "4.4.1", Text: "no answer from host"}
	replyConnLost    = Reply{Code: 451, Enh: "4.4.2", Text: "connection lost"}
	replyTimeout     = Reply{Code: 451, Enh: "4.4.2", Text: "timed out"}
	replyTLSFailed   = Reply{Code: 451, Enh: "4.7.5", Text: "TLS handshake or certificate check failed"}
	replyTLSMissing  = Reply{Code: 451, Enh: "4.7.4", Text: "TLS is required but the server does not offer STARTTLS"}
	replyAuthFailed  = Reply{Code: 451, Enh: "4.7.8", Text: "authentication to the smarthost failed"}
	replySMTPUTF8    = Reply{Code: 553, Enh: "5.6.7",
		Text: "message needs SMTPUTF8 but the server does not offer it (RFC 6531)"}
	replyNo8Bit = Reply{Code: 554, Enh: "5.6.3",
		Text: "8-bit message cannot be converted to 7 bits for a server without 8BITMIME"}
	replyTooBig       = Reply{Code: 552, Enh: "5.3.4", Text: "message exceeds the server's SIZE limit"}
	replyBadRecipient = Reply{Code: 553, Enh: "5.1.3", Text: "bad recipient address"}
	replyBadReply     = Reply{Code: 451, Enh: "4.5.0",
		Text: "remote reply exceeds limits (lines, line length or size); connection closed"}
	replyBudget = Reply{Code: 451, Enh: "4.4.1",
		Text: "attempt budget used up (addresses or time) before a server gave a verdict"}
	replyFinalLost = Reply{Code: 451, Enh: "4.4.2",
		Text: "connection lost or timed out after the end of data; delivery status unknown, retried later"}
	replyDeniedNetwork = Reply{Code: 550, Enh: "5.4.4", Text: "MX address is in a denied network"}

	// RFC 8689 §5: REQUIRETLS that cannot be honoured fails at once with
	// 5.7.30 ("REQUIRETLS support required").
	replyRequireTLS = Reply{Code: 550, Enh: "5.7.30",
		Text: "REQUIRETLS: no MX offers REQUIRETLS over an authenticated TLS connection (RFC 8689)"}
)

// Replies both the client and its caller use.
var (
	// ReplyLocal is a failure of jetrelay itself (retried).
	ReplyLocal = Reply{Code: 451, Enh: "4.3.0", Text: "local error"}
	// ReplyShutdown: the attempt was cancelled (retried).
	ReplyShutdown = Reply{Code: 451, Enh: "4.3.2", Text: "delivery interrupted by shutdown"}
)
