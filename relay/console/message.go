package console

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/msgindex"
	"github.com/jetrelay/jetrelay/relay/ops"
)

// Bounds of the Message page.
const (
	maxHistory      = 60 // events shown: the first (accepted) and the latest
	maxHeaderFields = 40
)

// messageData is the Message page.
type messageData struct {
	ID        string
	Entries   []*queue.Item
	Header    []queue.HeaderField
	HeaderCut bool
	HeaderErr string
	Envelope  envelopeView
	History   []historyRow
	Omitted   int // events left out between the first and the latest
	HistErr   string
	CanDelete bool // a Bouncer is there for deletes with DSN
	// Summary is the index's view: the message's status and each
	// recipient's latest state (nil without an index or a summary).
	Summary *msgindex.Summary
}

// envelopeView is the message's envelope, from its queue entries or, once
// they are gone, from its accepted event.
type envelopeView struct {
	From, MsgID, User, Tag string
	Rcpts                  []string
	Size                   int64
	Meta                   map[string]string
	Accepted               string
}

// historyRow is one event of the message.
type historyRow struct {
	*events.Event
	Reply string // "<code> <enh> <text>"
	TLS   string // version, policy, cipher, verified, failure
}

// message shows one message: its envelope, its header while it is queued,
// and its history.
func (c *Console) message(w http.ResponseWriter, r *http.Request, s *session) {
	id := r.PathValue("id")
	if !queue.ValidID(id) {
		c.fail(w, r, http.StatusNotFound, "not a queue id")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	d := messageData{ID: id, CanDelete: c.o.Bouncer != nil}
	items, err := c.o.Queue.List(ctx, queue.ListOptions{ID: id})
	if err != nil {
		c.fail(w, r, http.StatusServiceUnavailable, "the queue is unavailable: "+err.Error())
		return
	}
	d.Entries = items
	c.readHeader(ctx, &d)
	c.readHistory(ctx, &d)
	if c.o.Index != nil {
		if sum, err := c.o.Index.Get(ctx, id); err == nil {
			d.Summary = &sum
		}
	}
	if len(items) == 0 && len(d.History) == 0 && d.HistErr == "" {
		c.fail(w, r, http.StatusNotFound, "no queue entry and no history for "+id)
		return
	}
	d.Envelope = envelopeOf(items, d.History)
	p := newPage(s, "Message "+id, "messages", d)
	p.Flash = actionFlash(r.URL.Query())
	c.render(w, http.StatusOK, "message", p)
}

// readHeader reads the message's header from its first readable entry.
func (c *Console) readHeader(ctx context.Context, d *messageData) {
	var errs []error
	for _, it := range d.Entries {
		h, err := c.o.Queue.MessageHeader(ctx, it)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		d.Header, d.HeaderCut = h.Fields, h.Truncated
		if len(d.Header) > maxHeaderFields {
			d.Header, d.HeaderCut = d.Header[:maxHeaderFields], true
		}
		return
	}
	if len(errs) > 0 {
		d.HeaderErr = errors.Join(errs...).Error()
	}
}

// readHistory reads the message's events in stream order and keeps the
// first (its acceptance) and the latest maxHistory-1.
func (c *Console) readHistory(ctx context.Context, d *messageData) {
	var first []historyRow
	ring := make([]historyRow, 0, maxHistory-1)
	later := 0 // events after the first
	err := events.Tail(ctx, c.o.JetStream, events.Filter{ID: d.ID}, func(rec events.Record) error {
		row := historyRow{Event: rec.Event, Reply: replyOf(rec.Event), TLS: tlsOf(rec.Event)}
		switch {
		case first == nil:
			first = []historyRow{row}
			return nil
		case len(ring) < cap(ring):
			ring = append(ring, row)
		default:
			ring[later%cap(ring)] = row
		}
		later++
		return nil
	})
	if err != nil {
		d.HistErr = err.Error()
	}
	if later > len(ring) { // the ring wrapped: its oldest row is at later % len
		d.Omitted = later - len(ring)
		k := later % len(ring)
		ring = append(ring[k:], ring[:k]...)
	}
	d.History = append(first, ring...)
}

func replyOf(e *events.Event) string {
	var parts []string
	if e.SMTPCode != 0 {
		parts = append(parts, strconv.Itoa(e.SMTPCode))
	}
	for _, p := range []string{e.SMTPEnh, e.Reply} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	return strings.Join(parts, " ")
}

func tlsOf(e *events.Event) string {
	var parts []string
	for _, p := range []string{e.TLS, e.TLSCipher, e.TLSPolicy} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	if e.TLSVerified != nil {
		parts = append(parts, map[bool]string{true: "verified", false: "not verified"}[*e.TLSVerified])
	}
	if e.TLSFailure != "" {
		parts = append(parts, "failure: "+e.TLSFailure)
	}
	return strings.Join(parts, ", ")
}

// envelopeOf takes the envelope from the queue entries, else from the
// history (accepted event, recipients of later events).
func envelopeOf(items []*queue.Item, hist []historyRow) envelopeView {
	var v envelopeView
	seen := map[string]bool{}
	addRcpt := func(a string) {
		if a != "" && !seen[strings.ToLower(a)] {
			seen[strings.ToLower(a)] = true
			v.Rcpts = append(v.Rcpts, a)
		}
	}
	for _, it := range items {
		e := it.Env
		v.From, v.MsgID, v.User, v.Tag, v.Size, v.Meta = e.From, e.MsgID, e.User, e.Tag, e.Size, e.Meta
		v.Accepted = when(e.Arrival)
		for _, r := range e.Rcpts {
			addRcpt(r.Addr)
		}
	}
	for _, h := range hist {
		e := h.Event
		if e.Event == events.Accepted && len(items) == 0 {
			if e.MailFrom != nil {
				v.From = *e.MailFrom
			}
			v.MsgID, v.User, v.Tag, v.Size, v.Meta, v.Accepted = e.MsgID, e.User, e.Tag, e.Size, e.Meta, when(e.Time)
		}
		if e.Event != events.DSN {
			addRcpt(e.Rcpt)
		}
	}
	return v
}

// messageActions are the forms of the Message page.
var messageActions = map[string]struct {
	action ops.Action
	noDSN  bool
}{
	"retry": {action: ops.Retry}, "hold": {action: ops.Hold}, "release": {action: ops.Release},
	"delete": {action: ops.Delete}, "delete-nodsn": {action: ops.Delete, noDSN: true},
}

// messageAction runs an operator action on one message (relay/ops, as
// `jetrelay queue` does) and shows the message again with the result.
func (c *Console) messageAction(w http.ResponseWriter, r *http.Request, s *session) {
	id, name := r.PathValue("id"), r.PathValue("action")
	a, ok := messageActions[name]
	if !ok || !queue.ValidID(id) {
		c.fail(w, r, http.StatusNotFound, "no such action")
		return
	}
	rep, err := c.act(r.Context(), s, a.action, ops.Request{ID: id, NoDSN: a.noDSN})
	if err != nil {
		c.fail(w, r, http.StatusConflict, fmt.Sprintf("%s %s: %v", name, id, err))
		return
	}
	http.Redirect(w, r, "/console/messages/"+id+"?"+reportQuery(name, rep), http.StatusSeeOther)
}

// act runs one operator action as the session's user.
func (c *Console) act(ctx context.Context, s *session, a ops.Action, req ops.Request) (ops.Report, error) {
	ctx, cancel := context.WithTimeout(ctx, actionTimeout)
	defer cancel()
	o := ops.Options{Queue: c.o.Queue, Events: c.o.Events, Actor: "console:" + s.User}
	if a == ops.Delete && !req.NoDSN {
		if c.o.Bouncer == nil {
			return ops.Report{}, ops.ErrNoBouncer
		}
		o.Bouncer = c.o.Bouncer
	}
	op, err := ops.New(o)
	if err != nil {
		return ops.Report{}, err
	}
	rep, err := op.Do(ctx, a, req)
	c.log.Info().Str("event", "console_action").Str("user", s.User).Str("action", string(a)).
		Str("queue_id", req.ID).Str("domain", req.Domain).Int("done", rep.Done).Int("skipped", rep.Skipped).
		Int("failed", rep.Failed).AnErr("error", err).Msg("console operator action")
	return rep, err
}

// actionTimeout bounds one action (a domain's entries, one by one).
const actionTimeout = 60 * time.Second

// reportQuery encodes an action's report for the page it redirects to.
func reportQuery(name string, rep ops.Report) string {
	return url.Values{"done": {name}, "n": {strconv.Itoa(rep.Done)}, "skipped": {strconv.Itoa(rep.Skipped)},
		"failed": {strconv.Itoa(rep.Failed)}}.Encode()
}

// actionFlash describes a report from reportQuery (only known actions and
// numbers are shown).
func actionFlash(q url.Values) string {
	name := q.Get("done")
	if _, ok := messageActions[name]; !ok {
		return ""
	}
	n, _ := strconv.Atoi(q.Get("n"))
	sk, _ := strconv.Atoi(q.Get("skipped"))
	f, _ := strconv.Atoi(q.Get("failed"))
	return fmt.Sprintf("%s: %d done, %d skipped, %d failed", name, n, sk, f)
}
