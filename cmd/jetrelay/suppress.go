package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/jetrelay/jetrelay/relay/bounce"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/safetext"
	"github.com/rs/zerolog"
)

const suppressAbout = `Manages the suppression list (JetStream KV bucket jetrelay_suppress).
Recipients that bounced hard (a permanent 5.1.x failure, or an asynchronous
bounce at the VERP intake) are refused at RCPT with 550 5.1.1 until their
entry expires, bounces.suppress_for after it was made.

  ls            print address, since, reason and expiry, aligned (--json: one
                JSON object per line)
  add ADDR      suppress ADDR by hand (--reason R)
  rm ADDR       lift the suppression of ADDR (exit 1 if it was not listed)

Every change is recorded in the events stream (suppressed / unsuppressed)
with the operator as actor. Works against any NATS jetrelay uses (--nats,
--creds), and never changes the bucket's expiry.`

func runSuppress(args []string, sio stdio) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return suppressMain(ctx, args, sio)
}

// suppressCmd is one parsed `jetrelay suppress` invocation.
type suppressCmd struct {
	sub    string
	addr   string
	reason string
	json   bool
	nf     *natsFlags
}

// suppressMain is runSuppress with the caller's context (tests pass theirs).
func suppressMain(ctx context.Context, args []string, sio stdio) int {
	c, rc, ok := parseSuppress(args, sio)
	if !ok {
		return rc
	}
	cfg, err := c.nf.loadConfig()
	if err != nil {
		_ = tprintf(sio.err, "jetrelay suppress: %v\n", err)
		return 1
	}
	q, err := connectNATS(ctx, c.nf, "suppress")
	if err != nil {
		_ = tprintf(sio.err, "jetrelay suppress: %v\n", err)
		return 1
	}
	defer q.Close()
	em := events.NewEmitter(zerolog.Nop(), &syncPublisher{js: q.JetStream(), warn: sio.err})
	l, err := bounce.AttachSuppressionList(ctx, bounce.SuppressionOptions{
		JetStream: q.JetStream(), Replicas: cfg.NATS.Replicas, TTL: cfg.Bounces.SuppressFor.D(), Events: em,
	})
	if err != nil {
		_ = tprintf(sio.err, "jetrelay suppress: %v\n", err)
		return 1
	}
	switch c.sub {
	case "ls":
		return suppressList(ctx, l, c.json, sio)
	case "add":
		s, err := l.Add(ctx, bounce.Suppression{Addr: c.addr, Reason: c.reason}, actor())
		if err != nil {
			_ = tprintf(sio.err, "jetrelay suppress: %v\n", err)
			return 1
		}
		_ = tprintf(sio.out, "suppressed %s until %s\n", s.Addr, expires(s))
		return 0
	default: // rm
		found, err := l.Remove(ctx, c.addr, actor())
		if err != nil {
			_ = tprintf(sio.err, "jetrelay suppress: %v\n", err)
			return 1
		}
		if !found {
			_ = tprintf(sio.err, "jetrelay suppress: %s is not suppressed\n", bounce.NormalizeAddr(c.addr))
			return 1
		}
		_ = tprintf(sio.out, "unsuppressed %s\n", bounce.NormalizeAddr(c.addr))
		return 0
	}
}

// parseSuppress reads the subcommand, its flags (before or after the
// address) and its one address argument.
func parseSuppress(args []string, sio stdio) (c suppressCmd, rc int, ok bool) {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintf(sio.out, "Usage: jetrelay suppress ls|add ADDR|rm ADDR [flags]\n\n%s\n", suppressAbout)
		if len(args) == 0 {
			return c, 2, false
		}
		return c, 0, false
	}
	c.sub = args[0]
	usage := map[string]string{"ls": "suppress ls [--json]", "add": "suppress add ADDR [--reason R]", "rm": "suppress rm ADDR"}[c.sub]
	if usage == "" {
		fmt.Fprintf(sio.err, "jetrelay suppress: unknown subcommand %q (ls, add, rm)\n", c.sub)
		return c, 2, false
	}
	fs := newFlags("suppress "+c.sub, usage, suppressAbout, sio)
	c.nf = addNATSFlags(fs)
	switch c.sub {
	case "ls":
		fs.BoolVar(&c.json, "json", false, "one JSON object per line")
	case "add":
		fs.StringVar(&c.reason, "reason", "added by an operator", "why (shown by ls)")
	}
	pos, rc, ok := parseMixed(fs, args[1:])
	if !ok {
		return c, rc, false
	}
	want := map[string]int{"ls": 0, "add": 1, "rm": 1}[c.sub]
	if len(pos) != want {
		fmt.Fprintf(sio.err, "jetrelay suppress: usage: jetrelay %s\n", usage)
		return c, 2, false
	}
	if want == 1 {
		c.addr = pos[0]
	}
	return c, 0, true
}

func suppressList(ctx context.Context, l *bounce.SuppressionList, asJSON bool, sio stdio) int {
	list, err := l.List(ctx)
	if err != nil {
		_ = tprintf(sio.err, "jetrelay suppress: %v\n", err)
		return 1
	}
	if asJSON {
		for _, s := range list {
			b, err := json.Marshal(s)
			if err != nil {
				_ = tprintf(sio.err, "jetrelay suppress: %v\n", err)
				return 1
			}
			_, _ = sio.out.Write(safetext.JSON(append(b, '\n')))
		}
		return 0
	}
	tw := tabwriter.NewWriter(sio.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ADDRESS\tSINCE\tEXPIRES\tREASON")
	for _, s := range list {
		_ = tprintf(tw, "%s\t%s\t%s\t%s\n", s.Addr, s.Since.UTC().Format(time.RFC3339), expires(s), oneLine(s.Reason))
	}
	_ = tw.Flush()
	return 0
}

func expires(s bounce.Suppression) string {
	if s.Expires.IsZero() {
		return "never"
	}
	return s.Expires.UTC().Format(time.RFC3339)
}

// oneLine keeps a reason on one table row.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 100 {
		s = strings.ToValidUTF8(s[:97], "") + "..."
	}
	return s
}
