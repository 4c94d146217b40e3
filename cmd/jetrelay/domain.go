package main

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/dnsclient"
	"github.com/jetrelay/jetrelay/relay/dnsname"
	"github.com/jetrelay/jetrelay/relay/domaincheck"
)

// Bounds of a domain check: its time, and the --ip addresses it
// evaluates SPF for (each evaluation may take ten DNS-querying terms).
const (
	defaultDomainCheckTimeout = time.Minute
	maxDomainCheckIPs         = 16
)

const domainUsage = `Usage: jetrelay domain check DOMAIN --config FILE [--ip ADDR]... [--json]

Checks that a sending domain's DNS fits this relay: SPF, DKIM, DMARC and
its alignment, the EHLO name's forward and reverse DNS, and the MX that
bounces go to. Each line is OK, WARN or FAIL with the fix.

Run 'jetrelay domain check --help' for its flags.
`

const domainCheckAbout = `Looks the domain's records up through the configured resolver
(delivery.dns.servers; empty = /etc/resolv.conf) and checks:
  spf          the sender domain's and the VERP domain's records authorise
               the relay's public outbound addresses (RFC 7208, at most 10
               DNS-querying terms)
  dkim         every configured key that signs the domain (or is published
               for it) has one record matching the key file
  dmarc        a record at _dmarc.DOMAIN or the organizational domain, its
               policy, and alignment of the From domain with the DKIM d=
               and the envelope domain (adkim/aspf, RFC 7489 §3.1)
  ehlo_*       the EHLO name (hostname) resolves to the outbound addresses
               and their PTR records name it
  bounce_mx    the VERP domain (or DOMAIN) has an MX that accepts bounces
The relay cannot see its public address behind NAT: name it with --ip
(repeatable); else delivery.source_ip is used; else SPF and reverse DNS are
checked without it (a WARN). Exit status: 0 no FAIL, 1 a FAIL (or an
unusable config), 2 usage.`

func runDomain(args []string, io stdio) int {
	if len(args) == 0 {
		fmt.Fprint(io.err, domainUsage)
		return 2
	}
	switch args[0] {
	case "-h", "--help", "help":
		fmt.Fprint(io.out, domainUsage)
		return 0
	case "check":
		return runDomainCheck(args[1:], io)
	}
	_ = tprintf(io.err, "jetrelay domain: unknown command %q\n\n", args[0])
	fmt.Fprint(io.err, domainUsage)
	return 2
}

// ipFlags collects --ip values.
type ipFlags []netip.Addr

func (f *ipFlags) String() string { return fmt.Sprint([]netip.Addr(*f)) }

func (f *ipFlags) Set(s string) error {
	if len(*f) == maxDomainCheckIPs {
		return fmt.Errorf("at most %d addresses", maxDomainCheckIPs)
	}
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return fmt.Errorf("not an IP address: %q", s)
	}
	*f = append(*f, ip.Unmap())
	return nil
}

func runDomainCheck(args []string, io stdio) int {
	fs := newFlags("domain check", "domain check DOMAIN --config FILE [--ip ADDR]... [--json]", domainCheckAbout, io)
	path := fs.String("config", "", "config file (required): hostname, delivery.dns, dkim.keys, bounces.verp_domain")
	var ips ipFlags
	fs.Var(&ips, "ip", "a public address the relay sends from (repeatable)")
	asJSON := fs.Bool("json", false, "print JSON")
	timeout := fs.Duration("timeout", defaultDomainCheckTimeout, "time for the whole check")
	pos, rc, ok := parseMixed(fs, args)
	if !ok {
		return rc
	}
	if len(pos) != 1 || *path == "" || *timeout <= 0 {
		fmt.Fprintln(io.err, "jetrelay domain check: want one DOMAIN, --config FILE and a positive --timeout")
		return 2
	}
	domain, err := dnsname.ToASCII(pos[0])
	if err != nil {
		_ = tprintf(io.err, "jetrelay domain check: %v\n", err)
		return 2
	}
	cfg, err := config.Load(*path)
	if cfg == nil {
		_ = tprintf(io.err, "jetrelay domain check: %v\n", err)
		return 1
	}
	if err != nil {
		_ = tprintf(io.err, "warning: %s has problems (run jetrelay check --config %s)\n", *path, *path)
	}
	opts, err := domainCheckOptions(cfg, domain, ips)
	if err != nil {
		_ = tprintf(io.err, "jetrelay domain check: %v\n", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	rep := domaincheck.Check(ctx, opts)
	if *asJSON {
		if printJSON(io, rep) != 0 {
			return 1
		}
	} else {
		printDomainReport(io, rep)
	}
	if rep.Failed() {
		return 1
	}
	return 0
}

// domainCheckOptions builds the check of domain (A-labels) from the config: the outbound
// addresses from --ip, else delivery.source_ip.
func domainCheckOptions(cfg *config.Config, domain string, ips ipFlags) (domaincheck.Options, error) {
	d := cfg.Delivery.DNS
	dc, err := dnsclient.New(dnsclient.Options{Servers: d.Servers, Timeout: d.Timeout.D()})
	if err != nil {
		return domaincheck.Options{}, err
	}
	o := domaincheck.Options{Domain: domain, Hostname: cfg.Hostname, VERPDomain: cfg.Bounces.VERPDomain,
		ParentDomains: cfg.DKIM.ParentDomains, Resolver: domaincheck.NewResolver(dc, 0),
		IPs: ips, IPSource: "--ip"}
	if len(ips) == 0 && cfg.Delivery.SourceIP != "" {
		if ip, err := netip.ParseAddr(cfg.Delivery.SourceIP); err == nil {
			o.IPs, o.IPSource = []netip.Addr{ip.Unmap()}, "delivery.source_ip"
		}
	}
	for i, k := range cfg.DKIM.Keys {
		o.Keys = append(o.Keys, configuredKey{i, k}.spec())
	}
	return o, nil
}

// printDomainReport prints one line per finding, each non-OK one with its fix.
func printDomainReport(io stdio, rep *domaincheck.Report) {
	src := "none known"
	if len(rep.IPs) > 0 {
		src = strings.Join(rep.IPs, ", ") + " (" + rep.IPSource + ")"
	}
	_ = tprintf(io.out, "domain %s: EHLO name %s, envelope domain %s, outbound addresses %s\n",
		rep.Domain, rep.Hostname, rep.EnvelopeDomain, src)
	counts := map[domaincheck.Status]int{}
	for _, f := range rep.Findings {
		counts[f.Status]++
		_ = tprintf(io.out, "%-4s  %-20s  %s: %s\n", string(f.Status), f.Check, f.Subject, f.Detail)
		if f.Fix != "" {
			_ = tprintf(io.out, "      fix: %s\n", f.Fix)
		}
	}
	fmt.Fprintf(io.out, "%d OK, %d WARN, %d FAIL\n", counts[domaincheck.OK], counts[domaincheck.Warn],
		counts[domaincheck.Fail])
}
