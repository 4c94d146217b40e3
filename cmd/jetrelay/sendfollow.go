package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jetrelay/jetrelay/relay/events"
)

// rcptOutcome is where one recipient of a sent message stands.
type rcptOutcome int

const (
	rcptPending rcptOutcome = iota
	rcptDelivered
	rcptDeferred
	rcptFailed
)

// sendTracker follows one message's recipients through its events.
type sendTracker struct {
	rcpts map[string]rcptOutcome // lower-cased address -> outcome
}

func newSendTracker(to []string) *sendTracker {
	t := &sendTracker{rcpts: map[string]rcptOutcome{}}
	for _, r := range to {
		t.rcpts[strings.ToLower(r)] = rcptPending
	}
	return t
}

// errSendSettled ends the event tail once every recipient has an outcome.
var errSendSettled = errors.New("settled")

// outcomeOf maps an event to the outcome it gives its recipient(s).
func outcomeOf(e *events.Event) rcptOutcome {
	switch {
	case e.Event == events.Delivery && (e.Status == events.StatusDelivered || e.Status == events.StatusRelayed):
		return rcptDelivered
	case e.Event == events.Delivery && e.Status == events.StatusDeferred, e.Event == events.Held:
		return rcptDeferred
	case e.Event == events.Delivery && e.Status == events.StatusFailed,
		e.Event == events.Bounced, e.Event == events.Expired, e.Event == events.Deleted:
		return rcptFailed
	}
	return rcptPending
}

// see records e; it reports whether every recipient now has an outcome.
// An event without a recipient (an operator's hold or delete of an
// entry) applies to every pending recipient of its domain.
func (t *sendTracker) see(e *events.Event) bool {
	out := outcomeOf(e)
	if out != rcptPending {
		for addr, cur := range t.rcpts {
			match := strings.EqualFold(addr, e.Rcpt) ||
				e.Rcpt == "" && (e.Domain == "" || strings.EqualFold(rcptDomainOf(addr), e.Domain))
			if match && (cur == rcptPending || out == rcptFailed) {
				t.rcpts[addr] = out
			}
		}
	}
	for _, cur := range t.rcpts {
		if cur == rcptPending {
			return false
		}
	}
	return true
}

// exitCode: 1 if any recipient failed, else 75 if any was deferred (or
// is still pending), else 0.
func (t *sendTracker) exitCode() int {
	code := sendExitDelivered
	for _, cur := range t.rcpts {
		switch cur {
		case rcptFailed:
			return sendExitFailed
		case rcptDeferred, rcptPending:
			code = sendExitDeferred
		}
	}
	return code
}

func rcptDomainOf(addr string) string {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		return addr[i+1:]
	}
	return ""
}

// followSend prints the message's events until every recipient is
// delivered, deferred or failed, or --wait runs out.
func followSend(ctx context.Context, o *sendOpts, id string, sio stdio) int {
	q, err := connectNATS(ctx, &o.nf, "send")
	if err != nil {
		_ = tprintf(sio.err, "jetrelay send: queued as %s, but cannot follow it: %v\n", id, err)
		return sendExitFailed
	}
	defer q.Close()
	wctx, cancel := context.WithTimeout(ctx, o.wait)
	defer cancel()
	t := newSendTracker(o.to)
	p := newEventPrinter(sio.out, false)
	err = events.Tail(wctx, q.JetStream(), events.Filter{ID: id, Follow: true}, func(r events.Record) error {
		if err := p.print(r); err != nil {
			return err
		}
		if t.see(r.Event) {
			return errSendSettled
		}
		return nil
	})
	switch {
	case errors.Is(err, errSendSettled):
	case wctx.Err() != nil && ctx.Err() == nil:
		_ = tprintf(sio.err, "jetrelay send: still queued after %s; follow it with: jetrelay logs -f --id %s\n",
			o.wait, id)
		return sendExitDeferred
	default:
		_ = tprintf(sio.err, "jetrelay send: following %s: %v\n", id, err)
		return sendExitFailed
	}
	code := t.exitCode()
	fmt.Fprintln(sio.out, map[int]string{sendExitDelivered: "delivered", sendExitFailed: "failed",
		sendExitDeferred: "deferred (the relay keeps retrying)"}[code])
	return code
}
