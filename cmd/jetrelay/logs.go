package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/safetext"
	"github.com/nats-io/nats.go/jetstream"
)

const logsAbout = `Shows delivery events from the events stream (JETRELAY_EVENTS): accepted,
each delivery attempt (delivered, deferred, failed), DSNs, bounces,
suppression changes, expiries and operator actions. Without -f it prints the
events kept (or those since --since) and exits; --id prints one message's
whole history in order. Works against any NATS jetrelay uses, so it can run
on another machine (--nats, --creds).

-f starts at now and prints what happens from then on; with --since it first
replays the events since then; with --id it first prints that message's
history. --id takes a queue id or a Message-ID (with or without <>): a
Message-ID is looked up in the accepted events kept (or those since --since),
and each message found is printed.

Output is one aligned line per event (time, queue id, status, recipient or
sender, peer, code, reply), coloured when stdout is a terminal; the peer is
the MX for deliveries and the client address for accepted and rejected
submissions. --json prints the events as stored, one JSON object per line
(for jq).

--meta key=value finds messages by the metadata their application set in
X-Jetrelay-Meta-<key> header fields (removed from the message at
submission, carried in every event of it); repeat it to require several.`

func runLogs(args []string, sio stdio) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return logsMain(ctx, args, sio)
}

// logsMain is runLogs with the caller's context (tests cancel it).
func logsMain(ctx context.Context, args []string, sio stdio) int {
	fs := newFlags("logs",
		"logs [-f] [--id QUEUEID] [--from ADDR] [--rcpt ADDR] [--domain D] [--status S] [--meta K=V]... [--since 1h] [--json]",
		logsAbout, sio)
	nf := addNATSFlags(fs)
	var f events.Filter
	fs.BoolVar(&f.Follow, "f", false, "follow: keep printing new events until interrupted")
	fs.BoolVar(&f.Follow, "follow", false, "same as -f")
	fs.StringVar(&f.ID, "id", "", "one message's history (queue id or Message-ID)")
	fs.StringVar(&f.From, "from", "", "messages from this envelope sender (their accepted event and everything after)")
	fs.StringVar(&f.Rcpt, "rcpt", "", "events for this recipient")
	fs.StringVar(&f.Domain, "domain", "", "events for this recipient domain")
	fs.StringVar(&f.Status, "status", "",
		"events with this status or kind: delivered, deferred, failed, accepted, rejected, dsn, ...")
	fs.Var(metaFlag{&f.Meta}, "meta",
		"messages whose X-Jetrelay-Meta-<key> metadata has key=value (repeatable: all must match)")
	since := fs.String("since", "", "start this long ago (1h, 30m) or at this time (RFC 3339)")
	asJSON := fs.Bool("json", false, "print raw JSON events, one per line")
	if rc, ok := parseFlags(fs, args); !ok {
		return rc
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(sio.err, "jetrelay logs: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	msgID, ok := splitLogID(&f, sio)
	if !ok {
		return 2
	}
	var err error
	if f.Since, err = parseSince(*since, time.Now()); err != nil {
		fmt.Fprintf(sio.err, "jetrelay logs: --since: %v\n", err)
		return 2
	}
	f.FromNow = f.Follow && f.Since.IsZero() && f.ID == ""
	q, err := connectNATS(ctx, nf, "logs")
	if err != nil {
		_ = tprintf(sio.err, "jetrelay logs: %v\n", err)
		return 1
	}
	defer q.Close()
	p := newEventPrinter(sio.out, *asJSON)
	switch {
	case msgID != "":
		err = printByMsgID(ctx, q.JetStream(), f, msgID, p.print)
		if errors.Is(err, errNoSuchMsgID) {
			_ = tprintf(sio.err, "jetrelay logs: no accepted message with Message-ID <%s> in the events kept\n", msgID)
			return 1
		}
	case f.ID != "" && !f.Follow:
		err = printHistory(ctx, q.JetStream(), f, p.print)
	default:
		err = events.Tail(ctx, q.JetStream(), f, p.print)
	}
	if err != nil && !(f.Follow && ctx.Err() != nil) {
		_ = tprintf(sio.err, "jetrelay logs: %v\n", err)
		return 1
	}
	return 0
}

// splitLogID moves an --id that is a Message-ID out of f (returned bare);
// ok is false (a usage error, reported) for anything else that is not a
// queue id.
func splitLogID(f *events.Filter, sio stdio) (msgID string, ok bool) {
	if f.ID == "" || queue.ValidID(f.ID) {
		return "", true
	}
	if msgID = bareMsgID(f.ID); msgID == "" {
		_ = tprintf(sio.err, "jetrelay logs: %q is neither a queue id nor a Message-ID\n", f.ID)
		return "", false
	}
	if f.Follow {
		fmt.Fprintln(sio.err, "jetrelay logs: -f takes a queue id, not a Message-ID (find the queue id without -f)")
		return "", false
	}
	f.ID = ""
	return msgID, true
}

// printHistory prints one message's events in the order they happened.
// The stream holds them in publish order, which can differ: submission
// publishes "accepted" after the enqueue returned, and a fast delivery
// attempt may publish first. Events carry their time (accepted: the
// arrival), so a stable sort by it restores the history.
func printHistory(ctx context.Context, js jetstream.JetStream, f events.Filter, print func(events.Record) error) error {
	var recs []events.Record
	err := events.Tail(ctx, js, f, func(r events.Record) error {
		recs = append(recs, r)
		return nil
	})
	if err != nil {
		return err
	}
	sort.SliceStable(recs, func(i, j int) bool { return recs[i].Event.Time.Before(recs[j].Event.Time) })
	for _, r := range recs {
		if err := print(r); err != nil {
			return err
		}
	}
	return nil
}

// parseSince accepts a duration back from now or an RFC 3339 time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%q is neither a duration (90m, 24h) nor an RFC 3339 time", s)
}

// ANSI colours for the status column.
const (
	ansiReset  = "\x1b[0m"
	ansiRed    = "\x1b[31m"
	ansiGreen  = "\x1b[32m"
	ansiYellow = "\x1b[33m"
	ansiCyan   = "\x1b[36m"
)

// eventPrinter writes events as aligned lines or raw JSON.
type eventPrinter struct {
	w      io.Writer
	json   bool
	colour bool
}

func newEventPrinter(w io.Writer, asJSON bool) *eventPrinter {
	return &eventPrinter{w: w, json: asJSON, colour: isTerminal(w) && os.Getenv("NO_COLOR") == ""} // isTerminal: bench.go
}

func (p *eventPrinter) print(r events.Record) error {
	if p.json {
		return writeJSONLine(p.w, r.Raw)
	}
	_, err := fmt.Fprintln(p.w, p.line(r.Event))
	return err
}

// line formats one event: time, queue id, status, recipient, peer, code, reply.
// Every field that came from the stream is escaped (safetext.Terminal).
func (p *eventPrinter) line(e *events.Event) string {
	id := safetext.Terminal(e.QueueID)
	if id == "" {
		id = "-"
	}
	status := safetext.Terminal(statusOf(e))
	col := fmt.Sprintf("%-12s", status)
	if c := statusColour(status); p.colour && c != "" {
		col = c + col + ansiReset
	}
	code := ""
	if e.SMTPCode != 0 {
		code = strconv.Itoa(e.SMTPCode)
		if e.SMTPEnh != "" {
			code += " " + safetext.Terminal(e.SMTPEnh)
		}
	}
	fields := []string{e.Time.UTC().Format("2006-01-02T15:04:05Z"), fmt.Sprintf("%-22s", id), col,
		fmt.Sprintf("%-30s", safetext.Terminal(who(e))), fmt.Sprintf("%-24s", safetext.Terminal(orDash(peer(e)))),
		fmt.Sprintf("%-9s", orDash(code)), safetext.Terminal(detail(e))}
	return strings.TrimRight(strings.Join(fields, "  "), " ")
}

func statusOf(e *events.Event) string {
	if e.Event == events.Delivery && e.Status != "" {
		return e.Status
	}
	return e.Event
}

func statusColour(s string) string {
	switch s {
	case events.StatusDelivered, events.StatusRelayed, events.Released:
		return ansiGreen
	case events.StatusDeferred, events.Held, events.Expired:
		return ansiYellow
	case events.StatusFailed, events.Rejected, events.Bounced, events.Deleted:
		return ansiRed
	case events.Accepted, events.DSN:
		return ansiCyan
	}
	return ""
}

// who is the recipient column: the recipient, else the sender of an
// accepted message.
func who(e *events.Event) string {
	switch {
	case e.Rcpt != "":
		return e.Rcpt
	case e.MailFrom != nil && e.RcptCount > 0:
		return fmt.Sprintf("from <%s> to %d", *e.MailFrom, e.RcptCount)
	case e.MailFrom != nil:
		return "from <" + *e.MailFrom + ">"
	}
	return "-"
}

// peer is the peer column: the MX (or its address) of a delivery, the
// client address of a submission event.
func peer(e *events.Event) string {
	switch {
	case e.MX != "":
		return e.MX
	case e.IP != "":
		return e.IP
	}
	return e.RemoteAddr
}

// detail is the reply column: the reply or reason, and what follows.
func detail(e *events.Event) string {
	var parts []string
	for _, s := range []string{e.Reply, e.Reason} {
		if s != "" {
			parts = append(parts, s)
		}
	}
	if e.NextAttempt != nil {
		parts = append(parts, "next "+e.NextAttempt.UTC().Format("15:04:05Z"))
	}
	if e.DSNID != "" {
		parts = append(parts, "dsn "+e.DSNID)
	}
	if e.Actor != "" {
		parts = append(parts, "by "+e.Actor)
	}
	if e.Event == events.Accepted && e.Size > 0 {
		parts = append(parts, strconv.FormatInt(e.Size, 10)+" bytes")
	}
	return strings.Join(parts, "; ")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
