package bounce

import (
	"context"
	"strings"

	"github.com/jetrelay/jetrelay/relay/events"
)

// Complaints (issue 18 point 4). An ARF feedback report (RFC 5965) may
// reach the intake from any sender, at the VERP return path of the
// message it is about (like a bounce) or at bounces.fbl_address, where
// mailbox providers' feedback loops send them. The message is found
//
//   - from the VERP address the report was sent to, else
//   - from a VERP address in the report: Original-Mail-From (RFC 5965
//     §3.2) or the original's Return-Path, both authenticated by the
//     token's MAC, else
//   - from jetrelay's own fields in the attached original: the queue id of
//     the Received field submission prepends, or a Message-ID it
//     generated (<queue id@hostname>). These are not authenticated; the
//     message must exist (a VERP record or its accepted event), and a
//     recipient is suppressed only when it is one of the message's
//     recorded recipients. Anyone who received the message can report it,
//     which is what a complaint is.
//
// The complaining recipient is the VERP record's (providers redact
// Original-Rcpt-To and the original's To: RFC 6590); a report naming a
// different, unredacted Original-Rcpt-To is recorded but suppresses
// nothing (a forward target complaining is not the recipient). Without
// VERP the recipient comes from Original-Rcpt-To, the original's To, or
// the "for <rcpt>" of jetrelay's Received field, matched against the
// message's records, else from its only record.
//
// "abuse" (case-insensitive) suppresses the recipient (ShouldSuppress);
// every type publishes a complaint event carrying the message's user,
// meta and tag (msginfo.go). A report that matches no message is
// accepted (250: the feedback loop did its job, and refusing its reports
// can get the address unsubscribed) and logged as complaint_unmatched.

// complaint is a report tied to a message.
type complaint struct {
	qid string
	rec verpRecord // the record: the token's recipient and the message's info
	via string     // how the message was found (logged as reason)
}

// handleReport records rep for each VERP recipient of the transaction and,
// when fbl is set, for the message the report itself names. A message
// reported twice in one transaction is recorded once.
func (b *Bouncer) handleReport(ctx context.Context, remote string, verps []string, fbl bool, rep *Report) {
	done := map[string]bool{}
	handle := func(c complaint) {
		key := c.qid + "\x00" + c.rec.Rcpt
		if done[key] {
			return
		}
		done[key] = true
		b.complain(ctx, remote, c, rep)
	}
	for _, to := range verps {
		qid, rec, ok := b.lookupVERP(ctx, to)
		if !ok {
			b.log.Info().Str("event", "complaint_unmatched").Str("remote_addr", remote).
				Str("feedback_type", rep.FeedbackType).Msg("VERP token expired or no longer known")
			continue
		}
		handle(complaint{qid: qid, rec: rec, via: "VERP return path"})
	}
	if !fbl {
		return
	}
	c, why := b.locate(ctx, rep)
	if why != "" {
		b.log.Warn().Str("event", "complaint_unmatched").Str("remote_addr", remote).
			Str("feedback_type", rep.FeedbackType).Str("user_agent", rep.UserAgent).
			Str("reason", why).Msg("feedback report matches no message of ours")
		return
	}
	handle(c)
}

// locate finds the message a report at the feedback-loop address is
// about; why says why not.
func (b *Bouncer) locate(ctx context.Context, rep *Report) (c complaint, why string) {
	for _, a := range []struct{ addr, via string }{
		{rep.OriginalMailFrom, "Original-Mail-From"}, {rep.Original.ReturnPath, "original's Return-Path"},
	} {
		if a.addr == "" {
			continue
		}
		if qid, rec, ok := b.lookupVERP(ctx, a.addr); ok {
			return complaint{qid: qid, rec: rec, via: a.via}, ""
		}
	}
	qid := rep.Original.jetrelayID(b.state().set.Hostname)
	if qid == "" {
		return complaint{}, "no VERP address and no jetrelay queue id in the report"
	}
	rec, ok := b.recordFor(ctx, qid, rep.candidates())
	if !ok {
		if rec, ok = b.acceptedInfo(ctx, qid); !ok {
			return complaint{}, "queue id " + qid + " is not a known message"
		}
	}
	return complaint{qid: qid, rec: rec, via: "jetrelay queue id in the original"}, ""
}

// candidates are the unredacted recipient addresses the report names:
// Original-Rcpt-To, the original's To, jetrelay's Received "for".
func (rep *Report) candidates() []string {
	var out []string
	add := func(a string) {
		if a != "" && !redacted(a) && len(out) < maxAddrs {
			out = append(out, a)
		}
	}
	for _, a := range rep.OriginalRcptTo {
		add(a)
	}
	for _, a := range rep.Original.To {
		add(a)
	}
	add(rep.Original.receivedFor())
	return out
}

// redacted reports whether a provider replaced the address's local part
// (RFC 6590): with "redacted", a run of x, *, # or dots, or a hash (16 or
// more hex digits).
func redacted(addr string) bool {
	local := strings.ToLower(addr[:max(strings.LastIndexByte(addr, '@'), 0)])
	if local == "" || strings.Contains(local, "redacted") || strings.Trim(local, "x*#.") == "" {
		return true
	}
	return len(local) >= minHashLen && strings.Trim(local, "0123456789abcdef") == ""
}

// minHashLen is the shortest hex local part taken for a hash (64 bits).
const minHashLen = 16

// complain applies the suppression rule to one complaint and publishes
// its event.
func (b *Bouncer) complain(ctx context.Context, remote string, c complaint, rep *Report) {
	rec := b.withInfo(ctx, c.qid, c.rec)
	reported := rec.Rcpt
	var named []string // unredacted Original-Rcpt-To
	for _, a := range rep.OriginalRcptTo {
		if !redacted(a) {
			named = append(named, a)
		}
	}
	if len(named) > 0 {
		reported = named[0]
		for _, a := range named {
			if rec.Rcpt != "" && NormalizeAddr(a) == rec.Rcpt {
				reported = a
				break
			}
		}
	}
	rcpt := rec.Rcpt
	if rcpt == "" {
		rcpt = NormalizeAddr(reported)
	}
	reply := "ARF complaint: feedback-type " + rep.FeedbackType
	if rep.UserAgent != "" {
		reply += " (" + rep.UserAgent + ")"
	}
	e := &events.Event{Event: events.Complaint, QueueID: c.qid, Rcpt: rcpt, RemoteAddr: remote,
		FeedbackType: rep.FeedbackType, Reply: reply}
	rec.stamp(e)
	b.log.Debug().Str("queue_id", c.qid).Str("via", c.via).Msg("feedback report matched")
	b.decide(ctx, Evidence{Source: SourceARF, FeedbackType: rep.FeedbackType, Reported: reported, Token: rec.Rcpt}, e)
}
