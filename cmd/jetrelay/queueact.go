package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/bounce"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/outcome"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// queueVerb is one action of jetrelay queue.
type queueVerb struct {
	usage string
	done  string // past tense for output
	event string // event kind recorded for each changed entry
}

var queueVerbs = map[string]queueVerb{
	"retry":   {"retry ID | --domain D | --all", "made due", events.Retried},
	"hold":    {"hold ID | --domain D", "held", events.Held},
	"release": {"release ID | --domain D", "released", events.Released},
	"delete":  {"delete ID | --domain D --yes [--no-bounce]", "deleted", events.Deleted},
}

// actOptions are the parsed flags of an action.
type actOptions struct {
	verb     string
	id       string
	domain   string
	all      bool
	yes      bool
	noBounce bool
}

func parseAct(c *queueCmd, verb string, args []string) (actOptions, int, bool) {
	o := actOptions{verb: verb}
	c.fs.StringVar(&o.domain, "domain", "", "every entry for this recipient domain")
	if verb == "retry" {
		c.fs.BoolVar(&o.all, "all", false, "every deferred entry")
	}
	if verb == "delete" {
		c.fs.BoolVar(&o.yes, "yes", false, "confirm deleting every entry of --domain")
		c.fs.BoolVar(&o.noBounce, "no-bounce", false, "send the sender no DSN")
	}
	pos, rc, ok := parseMixed(c.fs, args)
	if !ok {
		return o, rc, false
	}
	if len(pos) > 1 {
		fmt.Fprintf(c.sio.err, "jetrelay queue %s: one queue id at most\n", verb)
		return o, 2, false
	}
	if len(pos) == 1 {
		o.id = pos[0]
	}
	n := 0
	for _, set := range []bool{o.id != "", o.domain != "" && o.id == "", o.all} {
		if set {
			n++
		}
	}
	switch {
	case n != 1:
		fmt.Fprintf(c.sio.err, "jetrelay queue %s: give a queue id, --domain D%s\n", verb, map[bool]string{true: " or --all"}[verb == "retry"])
		return o, 2, false
	case o.id != "" && !queue.ValidID(o.id):
		fmt.Fprintf(c.sio.err, "jetrelay queue %s: %q is not a queue id\n", verb, o.id)
		return o, 2, false
	case verb == "delete" && o.id == "" && !o.yes:
		fmt.Fprintf(c.sio.err, "jetrelay queue delete: deleting every entry of %s needs --yes\n", o.domain)
		return o, 2, false
	}
	return o, 0, true
}

// queueAct runs retry, hold, release or delete over the selected entries.
func queueAct(ctx context.Context, verb string, args []string, sio stdio) int {
	c := newQueueCmd(verb, queueVerbs[verb].usage, sio)
	o, rc, ok := parseAct(c, verb, args)
	if !ok {
		return rc
	}
	q, err := c.connect(ctx)
	if err != nil {
		return c.fail("%v", err)
	}
	defer q.Close()
	sel := queue.ListOptions{ID: o.id, Domain: o.domain}
	if o.all {
		sel.State = queue.StateDeferred
	}
	items, err := q.List(ctx, sel)
	if err != nil {
		return c.fail("%v", err)
	}
	if len(items) == 0 {
		return c.fail("no matching entries")
	}
	em := events.NewEmitter(zerolog.Nop(), &syncPublisher{js: q.JetStream(), warn: sio.err})
	act, err := actFunc(ctx, c, o, q, em)
	if err != nil {
		return c.fail("%v", err)
	}
	return runActions(ctx, c, o, items, act, em)
}

// actFunc returns the queue operation of o.verb.
func actFunc(ctx context.Context, c *queueCmd, o actOptions, q *queue.Queue, em *events.Emitter) (func(*queue.Item) (queue.Result, error), error) {
	switch o.verb {
	case "retry":
		return func(it *queue.Item) (queue.Result, error) { return q.Retry(ctx, it) }, nil
	case "hold":
		return func(it *queue.Item) (queue.Result, error) { return q.Hold(ctx, it) }, nil
	case "release":
		return func(it *queue.Item) (queue.Result, error) { return q.Release(ctx, it) }, nil
	}
	var b queue.Bouncer
	if !o.noBounce {
		cfg, err := c.nf.loadConfig()
		if err != nil {
			return nil, err
		}
		bb, err := bounce.New(ctx, bounce.Options{Config: cfg, Queue: q, Events: em, Logger: zerolog.Nop(), AttachOnly: true})
		if err != nil {
			return nil, fmt.Errorf("cannot send DSNs (%w); use --no-bounce to delete without telling the sender", err)
		}
		b = deleteBouncer{bb}
	}
	return func(it *queue.Item) (queue.Result, error) { return q.Delete(ctx, it, b) }, nil
}

// runActions applies act to each item, recording an event per change and
// showing progress on a terminal; the summary goes to stdout.
func runActions(ctx context.Context, c *queueCmd, o actOptions, items []*queue.Item, act func(*queue.Item) (queue.Result, error), em *events.Emitter) int {
	v := queueVerbs[o.verb]
	progress := len(items) > 1 && isTerminal(c.sio.err)
	var done, skipped, failed int
	who := actor()
	for i, it := range items {
		if ctx.Err() != nil {
			break
		}
		res, err := act(it)
		name := it.Env.ID + "/" + it.Env.Domain
		switch {
		case err == nil && res.Done:
			done++
			em.Emit(&events.Event{Event: v.event, QueueID: it.Env.ID, MsgID: it.Env.MsgID, Domain: it.Env.Domain,
				MailFrom: events.Str(it.Env.From), RcptCount: len(it.Env.Rcpts), Actor: who, Reason: res.Note})
			if o.id != "" {
				fmt.Fprintf(c.sio.out, "%s %s\n", v.done, name)
			}
		case err == nil:
			skipped++
		case isSkip(err):
			skipped++
			if o.id != "" {
				fmt.Fprintf(c.sio.out, "skipped %s (%s): %v\n", name, it.State, err)
			}
		default:
			failed++
			fmt.Fprintf(c.sio.err, "%s: %v\n", name, err)
		}
		if res.Note != "" {
			fmt.Fprintf(c.sio.err, "%s: %s\n", name, res.Note)
		}
		if progress {
			fmt.Fprintf(c.sio.err, "\r%s: %d/%d", o.verb, i+1, len(items))
		}
	}
	if progress {
		fmt.Fprintln(c.sio.err)
	}
	fmt.Fprintf(c.sio.out, "%s: %d %s, %d skipped, %d failed\n", o.verb, done, v.done, skipped, failed)
	if failed > 0 || (o.id != "" && done == 0) {
		return 1
	}
	return 0
}

// isSkip reports errors that mean "this action does not apply now".
func isSkip(err error) bool {
	for _, e := range []error{queue.ErrInFlight, queue.ErrNotDeferred, queue.ErrHeldEntry, queue.ErrNotHeld, queue.ErrChanged} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// deleteBouncer adapts relay/bounce to queue.Bouncer: a deleted entry is a
// permanent failure of its recipients (5.0.0; no suppression).
type deleteBouncer struct{ b *bounce.Bouncer }

const deletedReply = "deleted from the queue by an operator"

func (d deleteBouncer) Deleted(ctx context.Context, env *queue.Envelope, body []byte) error {
	rs := make([]bounce.Result, len(env.Rcpts))
	now := time.Now()
	for i, r := range env.Rcpts {
		rs[i] = bounce.Result{Rcpt: r, Status: outcome.Failed, Reply: outcome.Reply{Code: 550, Enh: "5.0.0", Text: deletedReply}, Time: now}
	}
	return d.b.Failed(ctx, env, body, rs)
}

// syncPublisher records the CLI's few events synchronously; a failure is
// a warning (once): the action itself succeeded.
type syncPublisher struct {
	js     jetstream.JetStream
	warn   io.Writer
	warned bool
}

func (p *syncPublisher) Publish(e *events.Event) {
	data, err := json.Marshal(e)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err = p.js.Publish(ctx, events.Subject(e), data)
		cancel()
	}
	if err != nil && !p.warned {
		p.warned = true
		fmt.Fprintf(p.warn, "warning: operator action not recorded in the events stream: %v\n", err)
	}
}
