package bounce

import (
	"context"

	"github.com/jetrelay/jetrelay/relay/events"
)

// Bounced-event statuses besides events.StatusFailed.
const statusComplaint = "complaint" // an ARF feedback report

// handleBounce matches one bounce to the message and recipient its VERP
// address stands for, records event=bounced and suppresses what the
// suppression rule (ShouldSuppress) allows: only the exact recipient the
// token's KV record names, only on a DSN's 5.1.0/5.1.1/5.1.6 or an ARF
// abuse report.
func (b *Bouncer) handleBounce(ctx context.Context, remote, verpAddr string, msg []byte) {
	qid, tokRcpt, ok := b.ParseVERP(ctx, verpAddr)
	ignored := b.log.Info().Str("event", "bounce_ignored").Str("queue_id", qid).Str("remote_addr", remote)
	if !ok {
		ignored.Msg("VERP token expired or no longer known")
		return
	}
	t, _ := b.verifyVERP(verpAddr)
	bn, ok := ParseBounce(msg)
	if !ok {
		ignored.Msg("message at the bounce intake reports no delivery status")
		return
	}
	if bn.Feedback != nil {
		b.handleFeedback(ctx, remote, qid, tokRcpt, bn.Feedback)
		return
	}
	r, ok := matchBounce(bn, tokRcpt, t.h)
	if !ok {
		ignored.Str("rcpt", tokRcpt).Msg("bounce names no recipient of this message")
		return
	}
	if r.Action != ActionFailed {
		ignored.Str("rcpt", r.Addr).Str("status", r.Action).Msg("delivery report is not a failure")
		return
	}
	src := SourceText
	if bn.DSN {
		src = SourceDSN
	}
	ev := Evidence{Source: src, Status: r.Status, Temporary: !r.Permanent(), Reported: r.Addr, Token: tokRcpt}
	rcpt := tokRcpt
	if rcpt == "" {
		rcpt = NormalizeAddr(r.Addr)
	}
	b.decide(ctx, ev, &events.Event{Event: events.Bounced, QueueID: qid, Rcpt: rcpt, RemoteAddr: remote,
		MX: r.RemoteMTA, Status: events.StatusFailed, SMTPEnh: r.Status, Reply: r.Diagnostic})
}

// handleFeedback applies the rule to an ARF report (RFC 5965). The VERP
// token names the complaining recipient; Original-Rcpt-To is often
// redacted, so when absent the token's recipient is taken as reported,
// and when present it must be that recipient.
func (b *Bouncer) handleFeedback(ctx context.Context, remote, qid, tokRcpt string, fb *Feedback) {
	reported := tokRcpt
	if len(fb.Rcpts) > 0 {
		reported = fb.Rcpts[0]
		for _, a := range fb.Rcpts {
			if tokRcpt != "" && NormalizeAddr(a) == tokRcpt {
				reported = a
			}
		}
	}
	ev := Evidence{Source: SourceARF, FeedbackType: fb.Type, Reported: reported, Token: tokRcpt}
	rcpt := tokRcpt
	if rcpt == "" {
		rcpt = NormalizeAddr(reported)
	}
	b.decide(ctx, ev, &events.Event{Event: events.Bounced, QueueID: qid, Rcpt: rcpt, RemoteAddr: remote,
		Status: statusComplaint, Reply: "feedback-type " + fb.Type})
}

// decide emits e with the rule's verdict as its reason and suppresses
// the token's recipient when the rule says so.
func (b *Bouncer) decide(ctx context.Context, ev Evidence, e *events.Event) {
	suppress, why := ShouldSuppress(ev)
	if !b.state().set.SuppressEnabled() {
		suppress, why = false, "suppression is off (bounces.suppress)"
	}
	if suppress {
		e.Reason = "suppressed: " + why
	} else {
		e.Reason = "not suppressed: " + why
	}
	b.emit(e)
	if !suppress {
		return
	}
	reason := e.Reply
	if reason == "" {
		reason = why
	}
	_, err := b.supp.Add(ctx,
		Suppression{Addr: ev.Token, Reason: reason, Code: ev.Status, QueueID: e.QueueID}, ActorIntake)
	if err != nil {
		b.log.Error().Err(err).Str("queue_id", e.QueueID).Str("rcpt", ev.Token).Msg("could not suppress recipient")
	}
}

// matchBounce picks the reported recipient for the VERP recipient rcpt
// (hash h when the record is gone, for the event only). The
// Final-Recipient must be the token's recipient; Original-Recipient is
// never matched (an alias's member failing is not the alias failing).
// A DSN with a single recipient block is taken even when it names
// another address — it is recorded, and the rule refuses to suppress.
// Plain text must name the recipient.
func matchBounce(bn Bounce, rcpt string, h []byte) (BouncedRcpt, bool) {
	for _, r := range bn.Rcpts {
		if rcpt != "" && NormalizeAddr(r.Addr) == rcpt {
			return r, true
		}
		if rcpt == "" && hashIs(r.Addr, h) {
			return r, true
		}
	}
	if bn.DSN && len(bn.Rcpts) == 1 {
		return bn.Rcpts[0], true
	}
	return BouncedRcpt{}, false
}

func hashIs(addr string, h []byte) bool {
	return addr != "" && string(rcptHash(addr)) == string(h)
}
