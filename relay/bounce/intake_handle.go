package bounce

import (
	"context"

	"github.com/jetrelay/jetrelay/relay/events"
)

// handleBounce matches one bounce to the message and recipient its VERP
// address stands for, records event=bounced (with the message's user,
// meta and tag: msginfo.go) and suppresses what the suppression rule
// (ShouldSuppress) allows: only the exact recipient the token's KV record
// names, only on a DSN's 5.1.0/5.1.1/5.1.6. ARF reports are complaints
// (complaint.go).
func (b *Bouncer) handleBounce(ctx context.Context, remote, verpAddr string, msg []byte) {
	qid, rec, ok := b.lookupVERP(ctx, verpAddr)
	tokRcpt := rec.Rcpt
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
	e := &events.Event{Event: events.Bounced, QueueID: qid, Rcpt: rcpt, RemoteAddr: remote,
		MX: r.RemoteMTA, Status: events.StatusFailed, SMTPEnh: r.Status, Reply: r.Diagnostic}
	b.withInfo(ctx, qid, rec).stamp(e)
	b.decide(ctx, ev, e)
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
