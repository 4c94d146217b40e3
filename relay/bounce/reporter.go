package bounce

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/outcome"
	"github.com/nats-io/nats.go/jetstream"
)

// Result is one recipient's outcome as the delivery engine reports it
// (relay/outcome: shared with relay/deliver, which bounce does not import).
// The Bouncer implements deliver.Reporter (checked in cmd/jetrelay).
type Result = outcome.Result

// RFC 3461 §4.1 NOTIFY values.
const (
	notifyNever   = "NEVER"
	notifyFailure = "FAILURE"
	notifyDelay   = "DELAY"
	notifySuccess = "SUCCESS"
)

// Event statuses of event=dsn.
const (
	dsnQueued  = "queued"
	dsnDropped = "dropped"
)

// Failed reports recipients that failed for good (a permanent reply, or
// max_age reached with Temporary set). It suppresses the recipients the
// suppression rule (ShouldSuppress) names — a remote 5.1.0/5.1.1/5.1.6,
// never a locally generated status nor the recipient of a DSN — and
// queues one failed DSN for those whose NOTIFY includes FAILURE (the
// default). Safe to call again for the same failure.
func (b *Bouncer) Failed(ctx context.Context, env *queue.Envelope, body []byte, failed []Result) error {
	if b.state().set.SuppressEnabled() {
		for _, r := range failed {
			ok, why := ShouldSuppress(resultEvidence(env, r))
			if ok {
				b.suppressAfterFailure(ctx, env, r)
				continue
			}
			b.log.Debug().Str("queue_id", env.ID).Str("rcpt", r.Rcpt.Addr).Str("smtp_enh", r.Enh).
				Str("reason", why).Msg("failed recipient not suppressed")
		}
	}
	return b.report(ctx, ActionFailed, env, body, failed)
}

// RemovedEnh is the status of recipients whose entry an operator deleted
// (RFC 3463 §3.1: other undefined status; no remote server was involved).
const RemovedEnh = "5.0.0"

// Removed reports the recipients of an entry an operator deleted from the
// queue: a failure DSN (Action: failed, Status RemovedEnh, no
// Diagnostic-Code) whose text says an operator removed the message. It
// never suppresses anyone: no mailbox said no.
func (b *Bouncer) Removed(ctx context.Context, env *queue.Envelope, body []byte) error {
	now := b.now()
	rs := make([]Result, len(env.Rcpts))
	for i, r := range env.Rcpts {
		rs[i] = Result{Rcpt: r, Status: outcome.Failed, Reply: outcome.Reply{Enh: RemovedEnh}, Time: now}
	}
	return b.report(ctx, actionRemoved, env, body, rs)
}

// Relayed reports recipients accepted by a next hop that does not offer
// DSN (RFC 3461 §4.1 SUCCESS): a relayed DSN for those that asked for it.
func (b *Bouncer) Relayed(ctx context.Context, env *queue.Envelope, body []byte, relayed []Result) error {
	return b.report(ctx, ActionRelayed, env, body, relayed)
}

// Delayed reports recipients still being retried. Call it on every
// deferral with the envelope about to be deferred: it sends a delay notice
// once, when bounces.delay_notice_after has passed since arrival, to the
// recipients whose NOTIFY includes DELAY (the default), and then sets
// env.DelayNotified, which the caller must store with the deferred entry.
func (b *Bouncer) Delayed(ctx context.Context, env *queue.Envelope, body []byte, delayed []Result) error {
	if !b.DelayDue(env) {
		return nil
	}
	if err := b.report(ctx, ActionDelayed, env, body, delayed); err != nil {
		return err
	}
	env.DelayNotified = true
	return nil
}

// DelayDue reports whether a delay notice for env is due now.
func (b *Bouncer) DelayDue(env *queue.Envelope) bool {
	after := b.state().set.DelayNoticeAfter.D()
	return after > 0 && !env.DelayNotified && !b.now().Before(env.Arrival.Add(after))
}

func (b *Bouncer) suppressAfterFailure(ctx context.Context, env *queue.Envelope, r Result) {
	_, err := b.supp.Add(ctx, Suppression{
		Addr: r.Rcpt.Addr, Reason: strings.ReplaceAll(diagnostic(r), "\n", " "), Code: r.Enh, QueueID: env.ID,
		User: env.User,
	}, ActorDelivery)
	if err != nil {
		b.log.Error().Err(err).Str("queue_id", env.ID).Str("rcpt", r.Rcpt.Addr).Msg("could not suppress recipient")
	}
}

// wants reports whether the recipient's NOTIFY asks for this action.
func wants(r queue.Recipient, action string) bool {
	n := r.Notify
	if len(n) == 0 {
		n = []string{notifyFailure, notifyDelay} // RFC 3461 §4.1 default
	}
	want := map[string]string{ActionFailed: notifyFailure, actionRemoved: notifyFailure, ActionDelayed: notifyDelay,
		ActionRelayed: notifySuccess}[action]
	return slices.ContainsFunc(n, func(s string) bool { return strings.EqualFold(s, want) })
}

// report queues one DSN of the given action for the results that asked for
// it, at most once per (message, action, recipients).
func (b *Bouncer) report(ctx context.Context, action string, env *queue.Envelope, body []byte, results []Result) error {
	if reason := b.mustNotBounce(env); reason != "" {
		b.emit(&events.Event{Event: events.DSN, QueueID: env.ID, MsgID: env.MsgID, MailFrom: events.Str(env.From),
			Domain: env.Domain, RcptCount: len(results), Status: dsnDropped, Reason: action + ": " + reason,
			Meta: env.Meta, Tag: env.Tag})
		return nil
	}
	var rcpts []Result
	for _, r := range results {
		if wants(r.Rcpt, action) {
			rcpts = append(rcpts, r)
		}
	}
	if len(rcpts) == 0 {
		return nil
	}
	marker := dsnMarkerKey(env, action, rcpts)
	if e, err := b.kv.Get(ctx, marker); err == nil {
		b.log.Debug().Str("queue_id", env.ID).Str("dsn_id", string(e.Value())).Msg("DSN already queued for this event")
		return nil
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("bounce: DSN marker: %w", err)
	}
	dsnID, err := b.enqueue(ctx, action, env, body, rcpts)
	if err != nil {
		return err
	}
	if _, err := b.kv.Put(ctx, marker, []byte(dsnID)); err != nil {
		b.log.Warn().Err(err).Str("queue_id", env.ID).Str("dsn_id", dsnID).
			Msg("DSN marker not stored; a redelivery could repeat the DSN")
	}
	b.emit(&events.Event{Event: events.DSN, QueueID: env.ID, MsgID: env.MsgID, DSNID: dsnID, Rcpt: env.From,
		RcptCount: len(rcpts), Domain: env.Domain, Status: dsnQueued, Reason: action, Meta: env.Meta, Tag: env.Tag})
	return nil
}

// mustNotBounce returns why env gets no DSN: RFC 3461 §6.2 / RFC 5321
// §4.5.5 — never to the null reverse-path, never about a DSN.
func (b *Bouncer) mustNotBounce(env *queue.Envelope) string {
	switch {
	case env.IsDSN:
		return "the message is itself a delivery status notification"
	case env.From == "":
		return "null reverse-path"
	case !queue.ValidDomain(domainOf(env.From)):
		return "sender domain cannot be delivered to"
	}
	return ""
}

func (b *Bouncer) enqueue(
	ctx context.Context, action string, env *queue.Envelope, body []byte, rcpts []Result,
) (string, error) {
	set := b.state().set
	n := &notice{
		id: b.newID(), action: action, env: env, body: body, rcpts: rcpts, now: b.now().UTC(),
		hostname: set.Hostname, from: set.From, maxAge: set.MaxAge, retMax: int(set.ReturnMaxBytes),
	}
	if n.retMax <= 0 {
		n.retMax = defaultReturnMax
	}
	msg, eightBit := n.compose()
	dsn := &queue.Envelope{
		MsgID: "<" + n.id + ".dsn@" + set.Hostname + ">", From: "", Domain: domainOf(env.From),
		Rcpts:   []queue.Recipient{{Addr: env.From, Notify: []string{notifyNever}}},
		Arrival: n.now, IsDSN: true, Body8Bit: eightBit, SMTPUTF8: !isASCII(env.From),
	}
	if err := b.q.Enqueue(ctx, &queue.Message{ID: n.id, Body: msg, Entries: []*queue.Envelope{dsn}}); err != nil {
		return "", fmt.Errorf("bounce: queue %s DSN for %s: %w", action, env.ID, err)
	}
	return n.id, nil
}

// dsnMarkerKey identifies one report: message, entry domain, action and
// the recipients reported.
func dsnMarkerKey(env *queue.Envelope, action string, rcpts []Result) string {
	addrs := make([]string, len(rcpts))
	for i, r := range rcpts {
		addrs[i] = NormalizeAddr(r.Rcpt.Addr)
	}
	slices.Sort(addrs)
	h := sha256.Sum256([]byte(env.Domain + "\x00" + strings.Join(addrs, "\x00")))
	return "dsn." + env.ID + "." + action + "." + b32.EncodeToString(h[:10])
}

func domainOf(addr string) string {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return ""
	}
	return strings.ToLower(addr[at+1:])
}
