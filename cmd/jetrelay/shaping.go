package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jetrelay/jetrelay/relay/safetext"
	"github.com/jetrelay/jetrelay/relay/shaping"
)

const shapingUsage = `Usage: jetrelay shaping status [--json] [flags]
       jetrelay shaping resume PROVIDER [flags]

Shows and controls traffic shaping per mailbox provider (delivery.shaping):
the limits configured and in effect, connections open across the cluster,
the rate over the last minute, suspensions and the entries waiting.

Run 'jetrelay shaping status --help' or 'jetrelay shaping resume --help' for
their flags.
`

const shapingStatusAbout = `Lists every provider of delivery.shaping (the config's providers, then the
included file's) with its connections open now across every node and its
limit, the messages sent over the last minute, the rate in effect (lower
than the configured one while the builtin backoff or a rule holds it down),
a suspension with its reason and end, and the queue entries waiting for it.
The providers and their configured limits come from --config; the state
from the jetrelay_shaping bucket.

--json prints one object: {"providers": [{"name", "connections", "limit":
{"connections", "rate", "per_connection", "connection_rate", "per_source"},
"effective_rate", "rate", "suspended_until", "rate_until", "reason",
"waiting"}]}; rates
are written as in the config ("600/m", "" = unlimited), "rate" is the
number of messages sent over the last minute.`

const shapingResumeAbout = `Lifts a provider's suspension (by a rule) and its lowered rate (by a rule
or the builtin backoff) at once, on every node: its waiting entries are
tried again within its configured limits. The provider must be one of
delivery.shaping's (from --config). Nothing in force is no error.`

// shapingTimeout bounds one command's talk with NATS.
const shapingTimeout = 15 * time.Second

func runShaping(args []string, sio stdio) int {
	return runGroup("shaping", shapingUsage, map[string]subcommand{
		"status": shapingStatusMain,
		"resume": shapingResumeMain,
	}, args, sio)
}

// shapingStatusMain is `shaping status` with the caller's context.
func shapingStatusMain(ctx context.Context, args []string, sio stdio) int {
	fs := newFlags("shaping status", "shaping status [--json] [flags]", shapingStatusAbout, sio)
	nf := addNATSFlags(fs)
	asJSON := fs.Bool("json", false, "print one JSON object")
	pos, rc, ok := parseMixed(fs, args)
	if !ok {
		return rc
	}
	if len(pos) > 0 {
		fmt.Fprintln(sio.err, "jetrelay shaping status: usage: jetrelay shaping status [--json] [flags]")
		return 2
	}
	fail := func(err error) int {
		_ = tprintf(sio.err, "jetrelay shaping status: %v\n", err)
		return 1
	}
	set, err := cliShapingSettings(nf)
	if err != nil {
		return fail(err)
	}
	ctx, cancel := context.WithTimeout(ctx, shapingTimeout)
	defer cancel()
	q, err := connectNATS(ctx, nf, "shaping status")
	if err != nil {
		return fail(err)
	}
	defer q.Close()
	st, err := shaping.Status(ctx, q.JetStream(), set)
	if err != nil {
		return fail(err)
	}
	if *asJSON {
		if st == nil {
			st = []shaping.ProviderStatus{}
		}
		raw, err := json.MarshalIndent(struct {
			Providers []shaping.ProviderStatus `json:"providers"`
		}{st}, "", "  ")
		if err != nil {
			return fail(err)
		}
		_, _ = sio.out.Write(safetext.JSON(append(raw, '\n')))
		return 0
	}
	printShapingStatus(sio, st, time.Now())
	return 0
}

// cliShapingSettings reads delivery.shaping from --config.
func cliShapingSettings(nf *natsFlags) (shaping.Settings, error) {
	cfg, err := nf.loadConfig()
	if err != nil {
		return shaping.Settings{}, fmt.Errorf("config: %w", err)
	}
	return shapingSettings(cfg)
}

// printShapingStatus writes one aligned line per provider.
func printShapingStatus(sio stdio, st []shaping.ProviderStatus, now time.Time) {
	if len(st) == 0 {
		fmt.Fprintln(sio.out, "no providers configured (delivery.shaping.providers, delivery.shaping.include)")
		return
	}
	tw := tabwriter.NewWriter(sio.out, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "PROVIDER\tCONNS\tLAST MIN\tRATE\tLIMITS\tWAITING\tSTATE")
	for _, p := range st {
		_ = tprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", p.Name, ratio(p.Connections, p.Limit.Connections),
			strconv.FormatFloat(p.Rate, 'f', -1, 64), rateText(p.Effective, p.Limit.Rate), limitsText(p.Limit),
			p.Waiting, stateText(p, now))
	}
	_ = tw.Flush()
}

// ratio is "3/5", or "3" when unlimited.
func ratio(n, limit int) string {
	if limit <= 0 {
		return strconv.Itoa(n)
	}
	return strconv.Itoa(n) + "/" + strconv.Itoa(limit)
}

// rateText is the rate in effect, saying when it is below the configured one.
func rateText(eff, conf shaping.Rate) string {
	switch {
	case eff.Unlimited() && conf.Unlimited():
		return "unlimited"
	case eff == conf:
		return eff.String()
	case conf.Unlimited():
		return eff.String() + " (unlimited)"
	}
	return eff.String() + " (" + conf.String() + ")"
}

// limitsText lists the configured limits other than connections and rate.
func limitsText(l shaping.Limits) string {
	var out []string
	if l.PerConnection > 0 {
		out = append(out, strconv.Itoa(l.PerConnection)+"/conn")
	}
	if !l.ConnectionRate.Unlimited() {
		out = append(out, "conns "+l.ConnectionRate.String())
	}
	if l.PerSource {
		out = append(out, "per source")
	}
	if len(out) == 0 {
		return "-"
	}
	return strings.Join(out, ", ")
}

// stateText is "ok", or the suspension with its end and reason.
func stateText(p shaping.ProviderStatus, now time.Time) string {
	if p.SuspendedUntil == nil {
		if p.RateUntil != nil {
			return "slowed until " + p.RateUntil.UTC().Format(time.RFC3339) + ": " + p.Reason
		}
		return "ok"
	}
	s := "suspended until " + p.SuspendedUntil.UTC().Format(time.RFC3339) +
		" (" + p.SuspendedUntil.Sub(now).Round(time.Second).String() + ")"
	if p.Reason != "" {
		s += ": " + p.Reason
	}
	return s
}

// shapingResumeMain is `shaping resume PROVIDER` with the caller's context.
func shapingResumeMain(ctx context.Context, args []string, sio stdio) int {
	fs := newFlags("shaping resume", "shaping resume PROVIDER [flags]", shapingResumeAbout, sio)
	nf := addNATSFlags(fs)
	pos, rc, ok := parseMixed(fs, args)
	if !ok {
		return rc
	}
	if len(pos) != 1 {
		fmt.Fprintln(sio.err, "jetrelay shaping resume: usage: jetrelay shaping resume PROVIDER [flags]")
		return 2
	}
	name := pos[0]
	fail := func(err error) int {
		_ = tprintf(sio.err, "jetrelay shaping resume: %v\n", err)
		return 1
	}
	set, err := cliShapingSettings(nf)
	if err != nil {
		return fail(err)
	}
	if !knownProvider(set, name) {
		return fail(fmt.Errorf("no provider %q in delivery.shaping (see jetrelay shaping status)", name))
	}
	ctx, cancel := context.WithTimeout(ctx, shapingTimeout)
	defer cancel()
	q, err := connectNATS(ctx, nf, "shaping resume")
	if err != nil {
		return fail(err)
	}
	defer q.Close()
	if err := shaping.Resume(ctx, q.JetStream(), name); errors.Is(err, shaping.ErrNotSuspended) {
		_ = tprintf(sio.out, "nothing to resume: %s is neither suspended nor slowed\n", name)
		return 0
	} else if err != nil {
		return fail(err)
	}
	_ = tprintf(sio.out, "resumed %s on every node\n", name)
	return 0
}

func knownProvider(set shaping.Settings, name string) bool {
	for _, p := range set.Providers {
		if p.Name == name {
			return true
		}
	}
	return false
}
