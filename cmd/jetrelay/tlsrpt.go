package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jetrelay/jetrelay/relay/mtasts"
	"github.com/jetrelay/jetrelay/relay/safetext"
	"github.com/jetrelay/jetrelay/relay/tlsrpt"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

const tlsrptUsage = `Usage: jetrelay tlsrpt show [--domain D] [--json] [flags]
       jetrelay tlsrpt send --now [flags]

TLS reporting (RFC 8460, delivery.tls_rpt): today's successful and failed
TLS sessions per recipient domain, counted cluster-wide in the
jetrelay_tlsrpt bucket, and the daily reports to domains that publish a
_smtp._tls record (sent by the relay shortly after midnight UTC).

Run 'jetrelay tlsrpt show --help' or 'jetrelay tlsrpt send --help' for
their flags.
`

const tlsrptShowAbout = `Prints today's (UTC) TLS session counters per recipient domain and policy
(sts, tlsa per MX host, no-policy-found): successful sessions, failed
sessions, and the failures by result type, MX host and address. Counts reach
the bucket within about ten seconds of the delivery.

--json prints one object: {"day", "domains": [{"domain", "day", "policies":
[{"type", "mx_host", "success", "failures": [{"result", "sending_ip",
"receiving_mx", "receiving_ip", "count"}]}]}]}.`

const tlsrptSendAbout = `Sends today's reports now, with the sessions counted so far (the report's
date range ends now), to every domain counted today that publishes a
_smtp._tls record, by mail (DKIM-signed, through the queue) and https.
Still one report per domain per day across the cluster: a domain reported
by --now is not reported again by tonight's run, and the sessions after
--now are in no report. --now is required.`

// tlsrptTimeout bounds one command (sending includes DNS and https).
const tlsrptTimeout = 2 * time.Minute

func runTLSRPT(args []string, sio stdio) int {
	return runGroup("tlsrpt", tlsrptUsage, map[string]subcommand{
		"show": tlsrptShowMain,
		"send": tlsrptSendMain,
	}, args, sio)
}

// tlsrptBucket opens the counts bucket; a relay that never counted has none.
func tlsrptBucket(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, tlsrpt.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, errors.New("no TLS-RPT counts yet (bucket " + tlsrpt.Bucket + " does not exist; is delivery.tls_rpt enabled?)")
	}
	return kv, err
}

func tlsrptShowMain(ctx context.Context, args []string, sio stdio) int {
	fs := newFlags("tlsrpt show", "tlsrpt show [--domain D] [--json] [flags]", tlsrptShowAbout, sio)
	nf := addNATSFlags(fs)
	domain := fs.String("domain", "", "only this recipient domain")
	asJSON := fs.Bool("json", false, "print one JSON object")
	pos, rc, ok := parseMixed(fs, args)
	if !ok {
		return rc
	}
	fail := func(err error) int {
		_ = tprintf(sio.err, "jetrelay tlsrpt show: %v\n", err)
		return 1
	}
	if len(pos) > 0 {
		fmt.Fprintln(sio.err, "jetrelay tlsrpt show: usage: jetrelay tlsrpt show [--domain D] [--json] [flags]")
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, tlsrptTimeout)
	defer cancel()
	q, err := connectNATS(ctx, nf, "tlsrpt show")
	if err != nil {
		return fail(err)
	}
	defer q.Close()
	kv, err := tlsrptBucket(ctx, q.JetStream())
	if err != nil {
		return fail(err)
	}
	day := tlsrpt.Day(time.Now())
	counts, err := tlsrpt.Read(ctx, kv, day, strings.TrimSuffix(*domain, "."))
	if err != nil {
		return fail(err)
	}
	if *asJSON {
		if counts == nil {
			counts = []*tlsrpt.DomainCounts{}
		}
		raw, err := json.MarshalIndent(struct {
			Day     string                 `json:"day"`
			Domains []*tlsrpt.DomainCounts `json:"domains"`
		}{day, counts}, "", "  ")
		if err != nil {
			return fail(err)
		}
		_, _ = sio.out.Write(safetext.JSON(append(raw, '\n')))
		return 0
	}
	printTLSRPT(sio, day, counts)
	return 0
}

// printTLSRPT writes one line per domain and policy, then its failures.
func printTLSRPT(sio stdio, day string, counts []*tlsrpt.DomainCounts) {
	if len(counts) == 0 {
		_ = tprintf(sio.out, "no TLS sessions counted on %s (UTC)\n", day)
		return
	}
	tw := tabwriter.NewWriter(sio.out, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "DOMAIN\tPOLICY\tMX\tSUCCESS\tFAILED")
	for _, d := range counts {
		for _, p := range d.Policies {
			_ = tprintf(tw, "%s\t%s\t%s\t%d\t%d\n", d.Domain, p.Type, dash(p.MXHost), p.Success, p.Failed())
			for _, f := range p.Failures {
				_ = tprintf(tw, "\t  %s\t%s %s\t\t%d\n", f.Result, dash(f.ReceivingMX), dash(f.ReceivingIP), f.Count)
			}
		}
	}
	_ = tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func tlsrptSendMain(ctx context.Context, args []string, sio stdio) int {
	fs := newFlags("tlsrpt send", "tlsrpt send --now [flags]", tlsrptSendAbout, sio)
	nf := addNATSFlags(fs)
	now := fs.Bool("now", false, "send today's reports now (required)")
	pos, rc, ok := parseMixed(fs, args)
	if !ok {
		return rc
	}
	if len(pos) > 0 || !*now {
		fmt.Fprintln(sio.err, "jetrelay tlsrpt send: usage: jetrelay tlsrpt send --now [flags] (the relay sends yesterday's reports by itself)")
		return 2
	}
	fail := func(err error) int {
		_ = tprintf(sio.err, "jetrelay tlsrpt send: %v\n", err)
		return 1
	}
	sent, err := tlsrptSendNow(ctx, nf, sio)
	if err != nil {
		return fail(err)
	}
	_ = tprintf(sio.out, "%d domains counted today: %d reports sent, %d skipped (no _smtp._tls record, or already reported), %d failed\n",
		sent.Domains, sent.Reported, sent.Skipped, sent.Failed)
	if sent.Failed > 0 {
		return 1
	}
	return 0
}

// tlsrptSendNow builds a reporter from --config and sends today's reports.
func tlsrptSendNow(ctx context.Context, nf *natsFlags, sio stdio) (tlsrpt.Sent, error) {
	cfg, err := nf.loadConfig()
	if err != nil {
		return tlsrpt.Sent{}, fmt.Errorf("config: %w", err)
	}
	signer, err := newDKIMSigner(cfg)
	if err != nil {
		return tlsrpt.Sent{}, fmt.Errorf("dkim: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, tlsrptTimeout)
	defer cancel()
	q, err := connectNATS(ctx, nf, "tlsrpt send")
	if err != nil {
		return tlsrpt.Sent{}, err
	}
	defer q.Close()
	kv, err := tlsrptBucket(ctx, q.JetStream())
	if err != nil {
		return tlsrpt.Sent{}, err
	}
	stsKV, err := q.JetStream().KeyValue(ctx, mtasts.Bucket)
	if err != nil {
		stsKV = nil // no cached MTA-STS policies: sts reports go without a policy-string
	}
	log := zerolog.New(sio.err).Level(zerolog.WarnLevel)
	o, err := tlsrptReporterOptions(cfg, kv, stsKV, q, log)
	if err != nil {
		return tlsrpt.Sent{}, err
	}
	host, _ := os.Hostname()
	o.Signer, o.Node = signer, "cli@"+host
	rep, err := tlsrpt.NewReporter(o)
	if err != nil {
		return tlsrpt.Sent{}, err
	}
	n := time.Now().UTC()
	return rep.SendDay(ctx, n, n)
}
