package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/jetrelay/jetrelay/relay/safetext"
	"github.com/jetrelay/jetrelay/relay/webhooks"
)

const webhooksUsage = `Usage: jetrelay webhooks ls [--json] [flags]
       jetrelay webhooks test NAME [flags]
       jetrelay webhooks replay NAME --since 2h [flags]

Shows and exercises the webhooks of the config (top-level webhooks): what
each has not yet delivered, its last success and last error; a signed test
event; a replay of stored events.

Run 'jetrelay webhooks ls --help' (test, replay) for their flags.
`

const webhooksLsAbout = `Lists every webhook of --config with its URL, the events its endpoint has
not yet acknowledged (pending: the consumer's pending and ack pending,
cluster-wide), and its last success and last error (from the
jetrelay_webhooks bucket, written by whichever node sends it).

--json prints one object: {"webhooks": [{"name", "url", "pending",
"last_success", "last_error", "last_error_at", "failing"}]}; pending is
null before any relay has run the webhook.`

const webhooksTestAbout = `POSTs one signed event (event "test") to the webhook NAME of --config,
from this host, and reports the endpoint's answer: a receiver's signature
check can be tried without sending mail.`

const webhooksReplayAbout = `POSTs again, from this host, every stored event since --since that the
webhook NAME of --config receives (its events and users), in stream order,
in batches of its batch.max, signed, each with the event_id it had the
first time so receivers de-duplicate. It reads the events stream (as far
back as events.max_age keeps) and leaves the webhook's own consumer and
its pending events alone. The first failing POST ends it (exit 1).`

// webhooksTimeout bounds ls and test; replay runs until done or ^C.
const webhooksTimeout = 30 * time.Second

func runWebhooks(args []string, sio stdio) int {
	return runGroup("webhooks", webhooksUsage, map[string]subcommand{
		"ls":     webhooksLs,
		"test":   webhooksTest,
		"replay": webhooksReplay,
	}, args, sio)
}

// webhookRow is one line of `webhooks ls`.
type webhookRow struct {
	Name    string  `json:"name"`
	URL     string  `json:"url"`
	Pending *uint64 `json:"pending"`
	webhooks.Status
}

func webhooksLs(ctx context.Context, args []string, sio stdio) int {
	fs := newFlags("webhooks ls", "webhooks ls [--json] [flags]", webhooksLsAbout, sio)
	nf := addNATSFlags(fs)
	asJSON := fs.Bool("json", false, "print one JSON object")
	pos, rc, ok := parseMixed(fs, args)
	if !ok {
		return rc
	}
	fail := func(err error) int {
		_ = tprintf(sio.err, "jetrelay webhooks ls: %v\n", err)
		return 1
	}
	if len(pos) > 0 {
		fmt.Fprintln(sio.err, "jetrelay webhooks ls: usage: jetrelay webhooks ls [--json] [flags]")
		return 2
	}
	cfg, err := nf.loadConfig()
	if err != nil {
		return fail(fmt.Errorf("config: %w", err))
	}
	ctx, cancel := context.WithTimeout(ctx, webhooksTimeout)
	defer cancel()
	q, err := connectNATS(ctx, nf, "webhooks ls")
	if err != nil {
		return fail(err)
	}
	defer q.Close()
	rows := []webhookRow{}
	for _, w := range cfg.Webhooks {
		row := webhookRow{Name: w.Name, URL: w.URL}
		if row.Status, err = webhooks.ReadStatus(ctx, q.JetStream(), w.Name); err != nil {
			return fail(err)
		}
		n, err := webhooks.Pending(ctx, q.JetStream(), w.Name)
		switch {
		case err == nil:
			row.Pending = &n
		case !errors.Is(err, webhooks.ErrNoConsumer):
			return fail(err)
		}
		rows = append(rows, row)
	}
	if *asJSON {
		raw, err := json.MarshalIndent(struct {
			Webhooks []webhookRow `json:"webhooks"`
		}{rows}, "", "  ")
		if err != nil {
			return fail(err)
		}
		_, _ = sio.out.Write(safetext.JSON(append(raw, '\n')))
		return 0
	}
	printWebhooks(sio, rows)
	return 0
}

// printWebhooks writes one aligned line per webhook.
func printWebhooks(sio stdio, rows []webhookRow) {
	if len(rows) == 0 {
		fmt.Fprintln(sio.out, "no webhooks configured (webhooks in --config)")
		return
	}
	tw := tabwriter.NewWriter(sio.out, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tPENDING\tLAST SUCCESS\tLAST ERROR\tURL")
	for _, r := range rows {
		pending := "-"
		if r.Pending != nil {
			pending = strconv.FormatUint(*r.Pending, 10)
		}
		last, lastErr := "-", "-"
		if r.LastSuccess != nil {
			last = r.LastSuccess.UTC().Format(time.RFC3339)
		}
		if r.LastErrorAt != nil {
			lastErr = r.LastErrorAt.UTC().Format(time.RFC3339) + " " + r.LastError
			if r.Failing > 0 {
				lastErr += fmt.Sprintf(" (failing, %d attempts)", r.Failing)
			}
		}
		_ = tprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Name, pending, last, lastErr, r.URL)
	}
	_ = tw.Flush()
}

// cliHook finds webhook name in --config and reads its secret.
func cliHook(nf *natsFlags, name string) (webhooks.Hook, error) {
	cfg, err := nf.loadConfig()
	if err != nil {
		return webhooks.Hook{}, fmt.Errorf("config: %w", err)
	}
	for _, w := range cfg.Webhooks {
		if w.Name == name {
			return webhookHook(w)
		}
	}
	return webhooks.Hook{}, fmt.Errorf("no webhook %q in the config", name)
}

func webhooksTest(ctx context.Context, args []string, sio stdio) int {
	fs := newFlags("webhooks test", "webhooks test NAME [flags]", webhooksTestAbout, sio)
	nf := addNATSFlags(fs)
	pos, rc, ok := parseMixed(fs, args)
	if !ok {
		return rc
	}
	if len(pos) != 1 {
		fmt.Fprintln(sio.err, "jetrelay webhooks test: usage: jetrelay webhooks test NAME [flags]")
		return 2
	}
	h, err := cliHook(nf, pos[0])
	if err == nil {
		ctx, cancel := context.WithTimeout(ctx, webhooksTimeout)
		defer cancel()
		err = webhooks.Test(ctx, nil, h)
	}
	if err != nil {
		_ = tprintf(sio.err, "jetrelay webhooks test: %v\n", err)
		return 1
	}
	_ = tprintf(sio.out, "%s: test event accepted by %s\n", h.Name, h.URL)
	return 0
}

func webhooksReplay(ctx context.Context, args []string, sio stdio) int {
	fs := newFlags("webhooks replay", "webhooks replay NAME --since 2h [flags]", webhooksReplayAbout, sio)
	nf := addNATSFlags(fs)
	since := fs.Duration("since", 0, "replay the events stored within this long (required), e.g. 2h")
	pos, rc, ok := parseMixed(fs, args)
	if !ok {
		return rc
	}
	if len(pos) != 1 || *since <= 0 {
		fmt.Fprintln(sio.err, "jetrelay webhooks replay: usage: jetrelay webhooks replay NAME --since 2h [flags]")
		return 2
	}
	fail := func(err error) int {
		_ = tprintf(sio.err, "jetrelay webhooks replay: %v\n", err)
		return 1
	}
	h, err := cliHook(nf, pos[0])
	if err != nil {
		return fail(err)
	}
	cctx, cancel := context.WithTimeout(ctx, webhooksTimeout)
	defer cancel()
	q, err := connectNATS(cctx, nf, "webhooks replay")
	if err != nil {
		return fail(err)
	}
	defer q.Close()
	n, err := webhooks.Replay(ctx, webhooks.ReplayOptions{JetStream: q.JetStream(), Hook: h,
		Since: time.Now().Add(-*since)})
	_ = tprintf(sio.out, "%s: %d event(s) replayed to %s\n", h.Name, n, h.URL)
	if err != nil {
		return fail(err)
	}
	return 0
}
