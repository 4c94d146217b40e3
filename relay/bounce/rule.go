package bounce

import (
	"strings"

	"github.com/jetrelay/jetrelay/queue"
)

// The suppression rule (issue 12 point 5, issue 14 point 1): suppression
// means a mailbox said no. It is one function, ShouldSuppress, used by the
// delivery side (Failed) and the bounce intake alike.
//
// Suppress only
//   - on RFC 3463 status 5.1.0 (other address status), 5.1.1 (bad
//     destination mailbox) or 5.1.6 (mailbox has moved) that came from a
//     remote server's SMTP reply or from an RFC 3464 DSN received at the
//     intake, about the exact recipient jetrelay sent to, or
//   - on an RFC 5965 ARF complaint whose Feedback-Type is "abuse" (§7.3),
//     received at the intake for the exact recipient its VERP token names.
//
// Never
//   - on a status jetrelay generated itself (5.1.2 NXDOMAIN, 5.1.10 null MX,
//     5.4.4, 5.4.7 expiry, policy refusals such as 5.7.30 or a denied
//     network): a DNS answer or a local policy is not a mailbox verdict;
//   - for the recipient of a DSN jetrelay sent (that recipient is the
//     original sender: RFC 3461 §6.2 says nothing returns to it, and a
//     broken sender domain must not poison later mail from it);
//   - at the intake for any address other than the one the VERP token's
//     KV record names: a DSN whose Final-Recipient differs (an alias
//     member, a forward target; Original-Recipient is not evidence) or a
//     token whose record is gone suppresses nothing;
//   - on plain-text (non-RFC 3464) bounces: their status is a heuristic
//     guess from free text;
//   - on temporary failures, other permanent statuses (e.g. a late
//     "5.7.1 rejected as spam") or other ARF feedback types: those are
//     recorded as events, not suppressed.

// Source says where a status came from.
type Source int

// Sources of a status.
const (
	// SourceLocal: jetrelay generated the status itself (DNS, policy,
	// expiry, a connection it could not make).
	SourceLocal Source = iota
	// SourceRemote: a remote server's SMTP reply during delivery.
	SourceRemote
	// SourceDSN: an RFC 3464 DSN received at the bounce intake.
	SourceDSN
	// SourceText: a plain-text bounce received at the intake.
	SourceText
	// SourceARF: an RFC 5965 feedback report received at the intake.
	SourceARF
)

// Evidence is everything the suppression rule looks at.
type Evidence struct {
	Source Source
	// Status is the RFC 3463 enhanced status code (DSN Status field or the
	// reply's enhanced code).
	Status string
	// Temporary is set when the failure's last reply was temporary (a
	// delivery that failed because max_age was reached).
	Temporary bool
	// AboutDSN is set when the failed message was itself a DSN.
	AboutDSN bool
	// FeedbackType is the ARF Feedback-Type, lower case (SourceARF).
	FeedbackType string
	// Reported is the recipient the evidence is about: the delivery
	// recipient, or the DSN's Final-Recipient / ARF Original-Rcpt-To.
	Reported string
	// Token is the recipient the VERP token's KV record names (intake
	// sources only; "" when the record is gone).
	Token string
}

// Suppressing statuses (RFC 3463 §3.2).
var mailboxStatuses = map[string]bool{"5.1.0": true, "5.1.1": true, "5.1.6": true}

// arfAbuse is the RFC 5965 §7.3 feedback type that suppresses.
const arfAbuse = "abuse"

// ShouldSuppress applies the suppression rule above to e. It returns
// whether e.Reported must be suppressed and, either way, a short reason
// for logs and events.
func ShouldSuppress(e Evidence) (bool, string) {
	switch {
	case e.AboutDSN:
		return false, "the failed message was a DSN: its recipient is the original sender"
	case e.Source == SourceLocal:
		return false, "status " + e.Status + " was generated locally, not by the recipient's server"
	case e.Source == SourceText:
		return false, "plain-text bounce: status not structured"
	case e.Temporary:
		return false, "temporary failure"
	case NormalizeAddr(e.Reported) == "" || !validAddr(NormalizeAddr(e.Reported)):
		return false, "no recipient address"
	}
	if e.Source == SourceDSN || e.Source == SourceARF {
		if e.Token == "" {
			return false, "the VERP token's recipient record is gone"
		}
		if NormalizeAddr(e.Token) != NormalizeAddr(e.Reported) {
			return false, "reported recipient is not the VERP token's recipient"
		}
	}
	if e.Source == SourceARF {
		if e.FeedbackType != arfAbuse {
			return false, "feedback type " + e.FeedbackType + " is not abuse"
		}
		return true, "abuse complaint"
	}
	if !mailboxStatuses[strings.TrimSpace(e.Status)] {
		return false, "status " + e.Status + " is not a mailbox verdict"
	}
	return true, "mailbox status " + e.Status
}

// resultEvidence derives the rule's evidence from a delivery result. A
// Result has no explicit origin marker, so it is derived: a status counts
// as remote when the result names the host or address it was received
// from (Result.MX or Result.IP), which the delivery engine fills only once
// a connection was made; DNS verdicts (5.1.2 NXDOMAIN, 5.1.10 null MX,
// 5.4.4) have neither and are local. Some local verdicts are made on a
// connection (5.3.4 SIZE, 5.6.7 SMTPUTF8, REQUIRETLS, 5.4.7 expiry after
// attempts) and so look remote here; none of them is 5.1.0, 5.1.1 or
// 5.1.6, which is the rule's main guard. When the delivery side's outcome
// type gets an explicit "reply came from the remote server" field, this
// is the one place to use it.
func resultEvidence(env *queue.Envelope, r Result) Evidence {
	src := SourceLocal
	if r.IP != "" || r.MX != "" {
		src = SourceRemote
	}
	return Evidence{Source: src, Status: r.Enh, Temporary: r.Temporary || r.Code < 500,
		AboutDSN: env.IsDSN, Reported: r.Rcpt.Addr}
}
