package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"os/user"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/safetext"
)

const queueAbout = `Inspects and acts on the queue, against the NATS jetrelay uses (safe while
jetrelay runs: every action names the stored copy it acts on, so an entry a
delivery worker moved meanwhile is reported, never duplicated or lost).

  ls [--domain D] [--state S] [--json]   counts by domain and state, or one domain's entries (also: list)
  show ID [--json]                       a message: its entries (envelope, state), its header and its history
  retry ID | --domain D | --all          make deferred entries due now
  hold ID | --domain D                   stop delivery (ready or deferred entries)
  release ID | --domain D                resume delivery of held entries
  delete ID | --domain D --yes [--no-bounce]
                                         remove entries; the sender gets a DSN unless --no-bounce

States: ready, in-flight (leased by a worker), deferred (waiting for a retry;
"parked" when its destination is failing: it is retried when a probe of its
domain gets through, or at its own delay notice or expiry), held.
Entries in flight are left alone: act again once they are deferred or done.`

func runQueue(args []string, sio stdio) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return queueMain(ctx, args, sio)
}

// queueMain is runQueue with the caller's context (tests pass theirs).
func queueMain(ctx context.Context, args []string, sio stdio) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintf(sio.out, "Usage: jetrelay queue <ls|show|retry|hold|release|delete> [flags]\n\n%s\n", queueAbout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	switch args[0] {
	case "ls", "list":
		return queueLs(ctx, args[1:], sio)
	case "show":
		return queueShow(ctx, args[1:], sio)
	case "retry", "hold", "release", "delete":
		return queueAct(ctx, args[0], args[1:], sio)
	}
	fmt.Fprintf(sio.err, "jetrelay queue: unknown subcommand %q (ls, show, retry, hold, release, delete)\n", args[0])
	return 2
}

// queueCmd parses a subcommand's flags and connects.
type queueCmd struct {
	fs   *flag.FlagSet
	nf   *natsFlags
	sio  stdio
	name string
}

func newQueueCmd(name, usage string, sio stdio) *queueCmd {
	fs := newFlags("queue "+name, "queue "+usage, queueAbout, sio)
	return &queueCmd{fs: fs, nf: addNATSFlags(fs), sio: sio, name: name}
}

func (c *queueCmd) fail(format string, args ...any) int {
	_ = tprintf(c.sio.err, "jetrelay queue %s: %s\n", c.name, fmt.Sprintf(format, args...))
	return 1
}

func (c *queueCmd) connect(ctx context.Context) (*queue.Queue, error) {
	q, err := connectNATS(ctx, c.nf, "queue "+c.name)
	if err != nil {
		return nil, err
	}
	if _, err := q.Stream(ctx); err != nil {
		q.Close()
		return nil, fmt.Errorf("queue stream %s: %w (has jetrelay serve run against this NATS?)", queue.StreamName, err)
	}
	return q, nil
}

func queueLs(ctx context.Context, args []string, sio stdio) int {
	c := newQueueCmd("ls", "ls [--domain D] [--state S] [--json]", sio)
	domain := c.fs.String("domain", "", "list this domain's entries (age, attempts, next attempt, last reply)")
	state := c.fs.String("state", "", "only entries in this state (ready, in-flight, deferred, held)")
	asJSON := c.fs.Bool("json", false, "print JSON")
	pos, rc, ok := parseMixed(c.fs, args)
	if !ok {
		return rc
	}
	if len(pos) > 0 {
		fmt.Fprintf(sio.err, "jetrelay queue ls: unexpected argument %q\n", pos[0])
		return 2
	}
	q, err := c.connect(ctx)
	if err != nil {
		return c.fail("%v", err)
	}
	defer q.Close()
	if *domain == "" && *state == "" {
		counts, err := q.Counts(ctx)
		if err != nil {
			return c.fail("%v", err)
		}
		if *asJSON {
			return printJSON(sio, counts)
		}
		printCounts(sio, counts)
		return 0
	}
	items, err := q.List(ctx, queue.ListOptions{Domain: *domain, State: queue.State(*state)})
	if err != nil {
		return c.fail("%v", err)
	}
	if *asJSON {
		return printJSON(sio, items)
	}
	printItems(sio, items, time.Now())
	return 0
}

// printJSON prints v indented, with terminal controls in its strings
// escaped (safetext.JSON).
func printJSON(sio stdio, v any) int {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	err := enc.Encode(v)
	if err == nil {
		_, err = sio.out.Write(safetext.JSON(buf.Bytes()))
	}
	if err != nil {
		_ = tprintf(sio.err, "jetrelay queue: %v\n", err)
		return 1
	}
	return 0
}

func printCounts(sio stdio, counts []queue.DomainCount) {
	tw := tabwriter.NewWriter(sio.out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "DOMAIN\tREADY\tIN-FLIGHT\tDEFERRED\tHELD\t")
	total := map[queue.State]int{}
	for _, dc := range counts {
		_ = tprintf(tw, "%s\t", dc.Domain)
		for _, st := range queue.States {
			fmt.Fprintf(tw, "%d\t", dc.Counts[st])
			total[st] += dc.Counts[st]
		}
		fmt.Fprintln(tw)
	}
	fmt.Fprintf(tw, "total (%s)\t%d\t%d\t%d\t%d\t\n", plural(len(counts), "domain"), total[queue.StateReady],
		total[queue.StateInFlight], total[queue.StateDeferred], total[queue.StateHeld])
	_ = tw.Flush()
}

func printItems(sio stdio, items []*queue.Item, now time.Time) {
	tw := tabwriter.NewWriter(sio.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "QUEUE ID\tDOMAIN\tSTATE\tAGE\tATTEMPTS\tNEXT ATTEMPT\tRCPTS\tLAST REPLY")
	for _, it := range items {
		e := it.Env
		next := "-"
		switch {
		case it.Parked: // its domain's next probe decides
			next = "parked: with its domain"
		case it.State == queue.StateDeferred && !e.NextAt.IsZero():
			next = e.NextAt.UTC().Format(time.RFC3339) + " (in " + age(e.NextAt.Sub(now)) + ")"
		}
		if it.Waiting != "" { // waits for a slot or a suspension, not a retry
			next += ", " + it.Waiting
		}
		_ = tprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%d\t%s\n", e.ID, e.Domain, it.State, age(now.Sub(e.Arrival)),
			e.Attempt, next, len(e.Rcpts), orDash(replyText(e.LastReply)))
	}
	_ = tw.Flush()
	fmt.Fprintln(sio.out, plural(len(items), "entry"))
}

// age formats a duration briefly: 45s, 12m, 3h5m, 2d4h.
func age(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
}

func replyText(r queue.Reply) string {
	var parts []string
	if r.Code != 0 {
		parts = append(parts, fmt.Sprint(r.Code))
	}
	for _, s := range []string{r.Enh, r.Text} {
		if s != "" {
			parts = append(parts, s)
		}
	}
	if r.MX != "" && len(parts) > 0 {
		parts = append(parts, "("+r.MX+")")
	}
	return strings.Join(parts, " ")
}

func queueShow(ctx context.Context, args []string, sio stdio) int {
	c := newQueueCmd("show", "show ID [--json]", sio)
	asJSON := c.fs.Bool("json", false, "print JSON: {entries, message_header, history}")
	pos, rc, ok := parseMixed(c.fs, args)
	if !ok {
		return rc
	}
	if len(pos) != 1 || !queue.ValidID(pos[0]) {
		fmt.Fprintln(sio.err, "jetrelay queue show: give one queue id")
		return 2
	}
	q, err := c.connect(ctx)
	if err != nil {
		return c.fail("%v", err)
	}
	defer q.Close()
	items, err := q.List(ctx, queue.ListOptions{ID: pos[0]})
	if err != nil {
		return c.fail("%v", err)
	}
	var hist []events.Record
	herr := events.Tail(ctx, q.JetStream(), events.Filter{ID: pos[0]}, func(r events.Record) error {
		hist = append(hist, r)
		return nil
	})
	if herr != nil {
		_ = tprintf(sio.err, "jetrelay queue show: history: %v\n", herr)
	}
	if len(items) == 0 && len(hist) == 0 {
		return c.fail("no entry and no history for %s", pos[0])
	}
	hdr := messageHeader(ctx, q, items, sio)
	if *asJSON {
		raw := make([]json.RawMessage, len(hist))
		for i, r := range hist {
			raw[i] = r.Raw
		}
		return printJSON(sio, map[string]any{"entries": items, "message_header": hdr, "history": raw})
	}
	for _, it := range items {
		printItem(sio, it, time.Now())
	}
	if len(items) == 0 {
		fmt.Fprintln(sio.out, "No entry left in the queue (delivered, failed or deleted).")
	}
	if hdr != nil {
		printMessageHeader(sio, hdr)
	}
	fmt.Fprintln(sio.out, "History:")
	p := newEventPrinter(sio.out, false)
	for _, r := range hist {
		_ = p.print(r)
	}
	return 0
}

func printItem(sio stdio, it *queue.Item, now time.Time) {
	e := it.Env
	tw := tabwriter.NewWriter(sio.out, 0, 0, 1, ' ', 0)
	kv := func(k, format string, args ...any) { _ = tprintf(tw, "%s:\t%s\n", k, fmt.Sprintf(format, args...)) }
	kv("Queue ID", "%s", e.ID)
	kv("Domain", "%s", e.Domain)
	kv("State", "%s (%s, seq %d, since %s)", it.State, it.Subject, it.Seq, it.Stored.UTC().Format(time.RFC3339))
	kv("From", "<%s>", e.From)
	for _, r := range e.Rcpts {
		extra := ""
		if len(r.Notify) > 0 {
			extra = " NOTIFY=" + strings.Join(r.Notify, ",")
		}
		kv("Recipient", "%s%s", r.Addr, extra)
	}
	kv("Arrival", "%s (%s ago)", e.Arrival.UTC().Format(time.RFC3339), age(now.Sub(e.Arrival)))
	kv("Attempts", "%d", e.Attempt)
	if !e.NextAt.IsZero() {
		kv("Next attempt", "%s", e.NextAt.UTC().Format(time.RFC3339))
	}
	if it.Waiting != "" {
		kv("Waiting", "%s", it.Waiting)
	}
	kv("Last reply", "%s", orDash(replyText(e.LastReply)))
	body := "inline"
	if e.Chunks > 0 {
		body = plural(e.Chunks, "chunk")
	}
	kv("Size", "%s (%s)", plural(int(e.Size), "byte"), body)
	kv("Message-ID", "%s", orDash(e.MsgID))
	kv("User", "%s", orDash(e.User))
	_ = tw.Flush()
	fmt.Fprintln(sio.out)
}

// messageHeader reads the message's own header section from the first
// entry whose body can be read (all entries of a message share it); nil
// when no entry is left or none could be read (a warning says why).
func messageHeader(ctx context.Context, q *queue.Queue, items []*queue.Item, sio stdio) *queue.MessageHeader {
	var errs []error
	for _, it := range items {
		h, err := q.MessageHeader(ctx, it)
		if err == nil {
			return &h
		}
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		fmt.Fprintf(sio.err, "jetrelay queue show: message header: %v\n", errors.Join(errs...))
	}
	return nil
}

// printMessageHeader prints the message's header fields as they were
// submitted (unfolded, encoded-words decoded, control characters escaped).
func printMessageHeader(sio stdio, h *queue.MessageHeader) {
	fmt.Fprintln(sio.out, "Message header:")
	for _, f := range h.Fields {
		if f.Name == "" {
			_ = tprintf(sio.out, "  (not a field) %s\n", f.Value)
			continue
		}
		_ = tprintf(sio.out, "  %s: %s\n", f.Name, f.Value)
	}
	if h.Truncated {
		fmt.Fprintf(sio.out, "  ... (header section longer than %d KiB, cut)\n", queue.MaxHeaderSection>>10)
	}
	fmt.Fprintln(sio.out)
}

// actor names who made an operator change, for events.
func actor() string {
	name := "unknown"
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	host, _ := os.Hostname()
	return "cli:" + name + "@" + host
}
