package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/deliver"
	"github.com/jetrelay/jetrelay/relay/dnsname"
	"github.com/jetrelay/jetrelay/relay/mtasts"
	"github.com/jetrelay/jetrelay/relay/smtpclient"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Bounds of a tls check: the whole check, one MX host's probes, the MX
// hosts probed, the addresses probed per host, the wait for NATS (the
// cached MTA-STS policy).
const (
	defaultTLSCheckTimeout = 2 * time.Minute
	defaultTLSHostTimeout  = 30 * time.Second
	defaultTLSCheckMaxMX   = 5
	maxTLSCheckMX          = 20
	maxTLSProbeAddrs       = 2
	tlsCheckNATSWait       = 5 * time.Second
)

const tlsUsage = `Usage: jetrelay tls check DOMAIN --config FILE [--json]

Shows what a delivery to DOMAIN would do about TLS right now: MX hosts,
DNSSEC state, TLSA records, the MTA-STS record and policy, the effective
policy per MX and a live STARTTLS handshake with each.

Run 'jetrelay tls check --help' for its flags.
`

const tlsCheckAbout = `Works out DOMAIN's TLS policy with delivery's own code and configuration
(delivery.dns, delivery.dns.dnssec, delivery.dane, delivery.mta_sts,
delivery.tls, delivery.port, delivery.denied_networks) and shows:
  MX hosts      in delivery order with their preference (or the implicit
                MX), their addresses and whether the MX and address
                answers carried the AD bit (delivery.dns.dnssec: trust_ad)
  TLSA          the records at _<delivery.port>._tcp.<host> of secure
                hosts, usable or not (RFC 7672)
  MTA-STS       the _mta-sts TXT record, the policy fetched now, the one
                cached in KV (read through --nats/--config; the cache is
                never written) and the one delivery uses (RFC 8461 §5)
  policy        per MX: dane, mta-sts, mta-sts-testing, configured,
                opportunistic or none, what it requires, or why delivery
                does not try the host
  handshake     EHLO and STARTTLS under that policy to at most
                --max-mx hosts (two addresses each, --host-timeout each,
                through delivery.denied_networks; no mail is sent): TLS
                version, certificate names and expiry, the WebPKI check
                for the MX name and the DANE match
Hosts delivery would try are probed first, in its order, then those it
leaves out. Exit status: 0 when at least one probed MX host that delivery
would try accepted a session meeting its policy (a routed domain: 0,
nothing probed); 1 when none did (handshake or certificate refused, no
STARTTLS under a policy that requires it, no answer), when delivery would
not connect at all (no usable MX: DNS failure, null MX, every host left
out by MTA-STS enforce or by a failed TLSA lookup), or when the config
cannot be used; 2 usage.`

func runTLS(args []string, io stdio) int {
	if len(args) == 0 {
		fmt.Fprint(io.err, tlsUsage)
		return 2
	}
	switch args[0] {
	case "-h", "--help", "help":
		fmt.Fprint(io.out, tlsUsage)
		return 0
	case "check":
		return runTLSCheck(args[1:], io)
	}
	_ = tprintf(io.err, "jetrelay tls: unknown command %q\n\n", args[0])
	fmt.Fprint(io.err, tlsUsage)
	return 2
}

// tlsCheckFlags are tls check's options.
type tlsCheckFlags struct {
	nf          *natsFlags
	json        bool
	timeout     time.Duration
	hostTimeout time.Duration
	maxMX       int
}

func runTLSCheck(args []string, io stdio) int {
	fs := newFlags("tls check", "tls check DOMAIN --config FILE [--json] [--max-mx N]", tlsCheckAbout, io)
	f := tlsCheckFlags{nf: addNATSFlags(fs)}
	fs.BoolVar(&f.json, "json", false, "print the report as one JSON object")
	fs.DurationVar(&f.timeout, "timeout", defaultTLSCheckTimeout, "time for the whole check")
	fs.DurationVar(&f.hostTimeout, "host-timeout", defaultTLSHostTimeout, "time for one MX host's handshakes")
	fs.IntVar(&f.maxMX, "max-mx", defaultTLSCheckMaxMX, fmt.Sprintf("MX hosts to probe (at most %d)", maxTLSCheckMX))
	pos, rc, ok := parseMixed(fs, args)
	if !ok {
		return rc
	}
	if len(pos) != 1 || f.nf.config == "" || f.timeout <= 0 || f.hostTimeout <= 0 || f.maxMX < 1 || f.maxMX > maxTLSCheckMX {
		_ = tprintf(io.err, "jetrelay tls check: want one DOMAIN, --config FILE, positive timeouts and --max-mx 1..%d\n",
			maxTLSCheckMX)
		return 2
	}
	domain, err := dnsname.ToASCII(pos[0])
	if err != nil {
		_ = tprintf(io.err, "jetrelay tls check: %v\n", err)
		return 2
	}
	cfg, err := config.Load(f.nf.config)
	if cfg == nil {
		_ = tprintf(io.err, "jetrelay tls check: %v\n", err)
		return 1
	}
	if err != nil {
		_ = tprintf(io.err, "warning: %s has problems (run jetrelay check --config %s)\n", f.nf.config, f.nf.config)
	}
	ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
	defer cancel()
	rep, err := checkTLS(ctx, cfg, domain, f)
	if err != nil {
		_ = tprintf(io.err, "jetrelay tls check: %v\n", err)
		return 1
	}
	if f.json {
		if printJSON(io, rep) != 0 {
			return 1
		}
	} else {
		printTLSReport(io, rep)
	}
	if !rep.Met {
		return 1
	}
	return 0
}

// checkTLS builds the report: delivery's MTA-STS decision, its client
// with that decision, the inspection and the probes.
func checkTLS(ctx context.Context, cfg *config.Config, domain string, f tlsCheckFlags) (*tlsReport, error) {
	d := cfg.Delivery
	rep := newTLSReport(cfg, domain)
	if i := deliver.RouteFor(d, domain); i >= 0 {
		r := d.Routes[i]
		rep.Route = &tlsRoute{Index: i, Host: r.Host, TLS: r.TLS, Verify: r.TLS != "none" && r.Verify()}
		rep.Met, rep.Verdict = true, fmt.Sprintf("routed through delivery.routes[%d] (%s): MX policies do not apply", i, r.Host)
		return rep, nil
	}
	var sts smtpclient.STSSource
	if d.MTASTS.Enabled {
		kv, cacheErr := openSTSCache(ctx, f.nf)
		ins, err := deliver.STSInspector(d, kv, zerolog.Nop())
		if err != nil {
			return nil, err
		}
		in := ins.Inspect(ctx, domain)
		if cacheErr != nil && in.CacheError != "" {
			in.CacheError = cacheErr.Error()
		}
		rep.MTASTS = &in
		sts = mtasts.Fixed{Domain: domain, Result: in.Decision}
	}
	client, err := deliver.CheckClient(deliverSettings(cfg), sts, zerolog.Nop())
	if err != nil {
		return nil, err
	}
	in, err := client.Inspect(ctx, domain)
	if err != nil {
		return nil, err
	}
	rep.fill(in)
	probeHosts(ctx, client, in, rep, f)
	rep.decide()
	return rep, nil
}

// openSTSCache opens the MTA-STS cache bucket read-only (never created
// here), waiting at most tlsCheckNATSWait for NATS.
func openSTSCache(ctx context.Context, nf *natsFlags) (jetstream.KeyValue, error) {
	cctx, cancel := context.WithTimeout(ctx, tlsCheckNATSWait)
	defer cancel()
	q, err := connectNATS(cctx, nf, "tls check")
	if err != nil {
		return nil, fmt.Errorf("NATS not reachable: %w", err)
	}
	context.AfterFunc(ctx, q.Close)
	kv, err := q.JetStream().KeyValue(cctx, mtasts.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, errors.New("no cache bucket yet (no policy fetched by serve)")
	}
	return kv, err
}

// probeHosts probes at most f.maxMX hosts that have addresses, each
// within f.hostTimeout: first those delivery would try, in its order, then
// those it leaves out (their certificates still tell why); the rest are
// counted.
func probeHosts(ctx context.Context, c *smtpclient.Client, in smtpclient.Inspection, rep *tlsReport, f tlsCheckFlags) {
	var order []int
	for _, excluded := range []bool{false, true} {
		for i, h := range in.Hosts {
			if len(h.Host.IPs) > 0 && h.Err == nil && (h.Excluded != "") == excluded {
				order = append(order, i)
			}
		}
	}
	for n, i := range order {
		if n == f.maxMX {
			rep.Unprobed = len(order) - n
			return
		}
		h := in.Hosts[i]
		hctx, cancel := context.WithTimeout(ctx, f.hostTimeout)
		for j, ip := range h.Host.IPs {
			if j == maxTLSProbeAddrs || hctx.Err() != nil {
				break
			}
			p := c.Probe(hctx, h, ip)
			rep.Hosts[i].Probes = append(rep.Hosts[i].Probes, newTLSProbe(p, h))
			if p.Met || p.Chain != nil {
				break // the server answered: its other addresses say the same
			}
		}
		cancel()
	}
}

// dnssecState describes delivery.dns.dnssec and delivery.dane.
func dnssecState(d config.Delivery) (dnssec, dane string) {
	dnssec = "off (the AD bit is not trusted: DANE is not used)"
	if d.DNS.TrustAD() {
		dnssec = "trust_ad (" + strings.Join(d.DNS.Servers, ", ") + ")"
	}
	switch {
	case !d.DANE.Enabled:
		dane = "off (delivery.dane.enabled: false)"
	case !d.DNS.TrustAD():
		dane = "inactive (needs delivery.dns.dnssec: trust_ad)"
	default:
		dane = "on"
	}
	return dnssec, dane
}
