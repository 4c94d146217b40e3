package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/bounce"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/ops"
	"github.com/rs/zerolog"
)

// queueVerb is one action of jetrelay queue.
type queueVerb struct {
	usage string
	done  string // past tense for output
}

var queueVerbs = map[string]queueVerb{
	"retry":   {"retry ID | --domain D | --all", "made due"},
	"hold":    {"hold ID | --domain D", "held"},
	"release": {"release ID | --domain D", "released"},
	"delete":  {"delete ID | --domain D --yes [--no-bounce]", "deleted"},
}

// parseAct reads an action's flags into an ops.Request.
func parseAct(c *queueCmd, verb string, args []string) (ops.Request, int, bool) {
	var r ops.Request
	var yes bool
	c.fs.StringVar(&r.Domain, "domain", "", "every entry for this recipient domain")
	if verb == "retry" {
		c.fs.BoolVar(&r.AllDeferred, "all", false, "every deferred entry")
	}
	if verb == "delete" {
		c.fs.BoolVar(&yes, "yes", false, "confirm deleting every entry of --domain")
		c.fs.BoolVar(&r.NoDSN, "no-bounce", false, "send the sender no DSN")
	}
	pos, rc, ok := parseMixed(c.fs, args)
	if !ok {
		return r, rc, false
	}
	if len(pos) > 1 {
		fmt.Fprintf(c.sio.err, "jetrelay queue %s: one queue id at most\n", verb)
		return r, 2, false
	}
	if len(pos) == 1 {
		r.ID = pos[0]
	}
	if err := r.Check(ops.Action(verb)); err != nil {
		if errors.Is(err, ops.ErrSelection) {
			err = fmt.Errorf("give a queue id, --domain D%s", map[bool]string{true: " or --all"}[verb == "retry"])
		}
		fmt.Fprintf(c.sio.err, "jetrelay queue %s: %v\n", verb, err)
		return r, 2, false
	}
	if verb == "delete" && r.ID == "" && !yes {
		fmt.Fprintf(c.sio.err, "jetrelay queue delete: deleting every entry of %s needs --yes\n", r.Domain)
		return r, 2, false
	}
	return r, 0, true
}

// queueAct runs retry, hold, release or delete (relay/ops) over the
// selected entries, printing each outcome and a summary.
func queueAct(ctx context.Context, verb string, args []string, sio stdio) int {
	c := newQueueCmd(verb, queueVerbs[verb].usage, sio)
	r, rc, ok := parseAct(c, verb, args)
	if !ok {
		return rc
	}
	q, err := c.connect(ctx)
	if err != nil {
		return c.fail("%v", err)
	}
	defer q.Close()
	em, closeEvents := cliEmitter(ctx, q, sio)
	defer closeEvents()
	o := ops.Options{Queue: q, Events: em, Actor: actor()}
	if verb == "delete" && !r.NoDSN {
		if o.Bouncer, err = cliBouncer(ctx, c, q, em); err != nil {
			return c.fail("cannot send DSNs (%v); use --no-bounce to delete without telling the sender", err)
		}
	}
	op, err := ops.New(o)
	if err != nil {
		return c.fail("%v", err)
	}
	progress := isTerminal(c.sio.err)
	mv := newMoving()
	r.Each = func(out ops.Outcome, i, n int) {
		mv.add(out.Item, out.Result.Done)
		printOutcome(c, verb, r.ID != "", out, progress && n > 1, i, n)
	}
	rep, err := op.Do(ctx, ops.Action(verb), r)
	if err != nil && !errors.Is(err, context.Canceled) {
		return c.fail("%v", err)
	}
	if !mv.wait(ctx, q) {
		fmt.Fprintln(c.sio.err, "note: some entries are still moving to their new state; "+
			"ls may show the old one for a moment")
	}
	if progress && rep.Selected > 1 {
		fmt.Fprintln(c.sio.err)
	}
	fmt.Fprintf(c.sio.out, "%s: %d %s, %d skipped, %d failed\n",
		verb, rep.Done, queueVerbs[verb].done, rep.Skipped, rep.Failed)
	if rep.Failed > 0 || (r.ID != "" && rep.Done == 0) {
		return 1
	}
	return 0
}

// printOutcome shows one entry's outcome: always failures and notes, the
// rest when one message was named; a progress counter on a terminal.
func printOutcome(c *queueCmd, verb string, one bool, out ops.Outcome, progress bool, i, n int) {
	name := out.Item.Env.ID + "/" + out.Item.Env.Domain
	switch {
	case out.Failed():
		fmt.Fprintf(c.sio.err, "%s: %v\n", name, out.Err)
	case out.Err != nil && one:
		fmt.Fprintf(c.sio.out, "skipped %s (%s): %v\n", name, out.Item.State, out.Err)
	case out.Result.Done && one:
		fmt.Fprintf(c.sio.out, "%s %s\n", queueVerbs[verb].done, name)
	}
	if out.Result.Note != "" {
		fmt.Fprintf(c.sio.err, "%s: %s\n", name, out.Result.Note)
	}
	if progress {
		fmt.Fprintf(c.sio.err, "\r%s: %d/%d", verb, i+1, n)
	}
}

// cliBouncer attaches to the bounce buckets as they are (the CLI's config
// may not be the server's) to queue delete DSNs.
func cliBouncer(ctx context.Context, c *queueCmd, q *queue.Queue, em *events.Emitter) (*bounce.Bouncer, error) {
	cfg, err := c.nf.loadConfig()
	if err != nil {
		return nil, err
	}
	return bounce.New(ctx, bounce.Options{Settings: bounceSettings(cfg), Queue: q, Events: em, Logger: zerolog.Nop(),
		AttachOnly: true})
}

// cliEventsWait bounds how long an ops command waits for its events to be stored.
const cliEventsWait = 5 * time.Second

// cliEmitter is an ops command's events.Emitter: the events stream
// publisher every component uses, attached to the stream as it is. The
// returned func flushes it and warns if an event was not recorded (the
// action itself is done either way).
func cliEmitter(ctx context.Context, q *queue.Queue, sio stdio) (*events.Emitter, func()) {
	warn := func(err error) {
		fmt.Fprintf(sio.err, "warning: operator action not recorded in the events stream: %v\n", err)
	}
	pub, err := events.NewPublisher(events.PublisherOptions{Conn: q.Conn(), Logger: zerolog.Nop(), Attach: true})
	if err == nil {
		err = pub.Start(ctx)
	}
	if err != nil { // warn only if an event is lost (not for ls)
		var lost unrecorded
		return events.NewEmitter(zerolog.Nop(), &lost), func() {
			if lost > 0 {
				warn(err)
			}
		}
	}
	return events.NewEmitter(zerolog.Nop(), pub), func() {
		cctx, cancel := context.WithTimeout(context.Background(), cliEventsWait)
		defer cancel()
		err := pub.Close(cctx)
		if err == nil && pub.Dropped() > 0 {
			err = fmt.Errorf("%s dropped", plural(int(pub.Dropped()), "event"))
		}
		if err != nil {
			warn(err)
		}
	}
}

// unrecorded counts the events an ops command could not record because it
// could not reach the events stream.
type unrecorded int

func (u *unrecorded) Publish(*events.Event) { *u++ }
