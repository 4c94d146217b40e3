package main

import (
	"context"
	"crypto"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"github.com/jetrelay/jetrelay/dkim"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/dnsclient"
	"github.com/miekg/dns"
)

// keyFileMode is how keygen writes a private key (dkim.CheckKeys warns
// about key files that group or others can access).
const keyFileMode fs.FileMode = 0o600

const dkimUsage = `Usage: jetrelay dkim <keygen|dns|check> [flags]

Manages DKIM keys (RFC 6376, RFC 8463).

  keygen  generate a key file and print the DNS record to publish
  dns     print the DNS records of the configured keys
  check   look the published records up and compare them with the keys

Run 'jetrelay dkim <command> --help' for its flags.
`

// newDKIMSigner builds submission's signer from the dkim section, loading
// every key once; an error here must stop the start (never sign nothing
// silently).
func newDKIMSigner(cfg *config.Config) (*dkim.Signer, error) {
	specs := make([]dkim.KeySpec, 0, len(cfg.DKIM.Keys))
	for i, k := range cfg.DKIM.Keys {
		specs = append(specs, configuredKey{i, k}.spec())
	}
	return dkim.NewSigner(specs, dkim.Options{ParentDomains: cfg.DKIM.ParentDomains, Lifetime: cfg.DKIM.Lifetime.D()})
}

func runDKIM(args []string, io stdio) int {
	if len(args) == 0 {
		fmt.Fprint(io.err, dkimUsage)
		return 2
	}
	switch args[0] {
	case "-h", "--help", "help":
		fmt.Fprint(io.out, dkimUsage)
		return 0
	case "keygen":
		return runDKIMKeygen(args[1:], io)
	case "dns":
		return runDKIMDNS(args[1:], io)
	case "check":
		return runDKIMCheck(args[1:], io)
	}
	fmt.Fprintf(io.err, "jetrelay dkim: unknown command %q\n\n%s", args[0], dkimUsage)
	return 2
}

func runDKIMKeygen(args []string, io stdio) int {
	fs := newFlags("dkim keygen", "dkim keygen --domain D --selector S [--algo rsa|ed25519] [--bits 2048] --out FILE",
		"Generates a DKIM private key, writes it to FILE as PKCS#8 PEM with mode 0600\n"+
			"(an existing FILE is never overwritten) and prints the DNS record to publish\n"+
			"as one zone-file line. Needs no config. Add the key to dkim.keys afterwards.\n"+
			"Ed25519 (RFC 8463) is not yet verified by every receiver: sign with an RSA key\n"+
			"too (two keys, two selectors, one domain).", io)
	domain := fs.String("domain", "", "signing domain, the d= tag (required)")
	selector := fs.String("selector", "", "selector, the s= tag, e.g. s2026 (required)")
	algo := fs.String("algo", string(dkim.RSA), "key type: rsa or ed25519")
	bits := fs.Int("bits", dkim.RecommendedRSABits, "RSA key size, 1024..4096")
	out := fs.String("out", "", "file to write the private key to (required, must not exist)")
	if rc, ok := parseFlags(fs, args); !ok {
		return rc
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(io.err, "jetrelay dkim keygen: "+format+"\n", a...)
		return 2
	}
	if *domain == "" || *selector == "" || *out == "" {
		return fail("--domain, --selector and --out are required")
	}
	if err := dkim.CheckNames(strings.ToLower(*domain), *selector); err != nil {
		return fail("%v", err)
	}
	if dkim.Algorithm(*algo) == dkim.Ed25519 && flagSet(fs, "bits") {
		return fail("--bits applies to rsa keys only")
	}
	if _, err := os.Lstat(*out); err == nil {
		return fail("%s exists: refusing to overwrite a key (pick a new file and selector)", *out)
	}
	key, err := dkim.GenerateKey(dkim.Algorithm(*algo), *bits)
	if err != nil {
		return fail("%v", err)
	}
	line, err := dkim.ZoneLine(*selector, *domain, key)
	if err != nil {
		return fail("%v", err)
	}
	if err := writeKeyFile(*out, key); err != nil {
		fmt.Fprintf(io.err, "jetrelay dkim keygen: %v\n", err)
		return 1
	}
	if bits := dkim.KeyBits(key); bits > 0 && bits < dkim.RecommendedRSABits {
		fmt.Fprintf(io.err, "warning: %d-bit RSA key; RFC 8301 §3.1 recommends %d bits\n", bits, dkim.RecommendedRSABits)
	}
	fmt.Fprintf(io.err, "wrote %s key to %s (mode 0600); publish this record:\n", dkim.Describe(key), *out)
	fmt.Fprintln(io.out, line)
	return 0
}

// flagSet reports whether the flag was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	found := false
	fs.Visit(func(f *flag.Flag) { found = found || f.Name == name })
	return found
}

// writeKeyFile creates path (which must not exist) with mode 0600.
func writeKeyFile(path string, key crypto.Signer) error {
	pemBytes, err := dkim.MarshalKey(key)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, keyFileMode)
	if err != nil {
		return err
	}
	_, err = f.Write(pemBytes)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}

// dkimSelection is what dns and check were asked for.
type dkimSelection struct {
	domain string // "" = all
	json   bool
}

// dkimConfig loads the config for dns and check. Problems elsewhere in the
// file are reported but do not stop the command; an unreadable file does.
func dkimConfig(name string, args []string, io stdio) (cfg *config.Config, sel dkimSelection, rc int, ok bool) {
	usageLine := "dkim " + name + " --config FILE [--domain D] [--json]"
	about := "Prints the DNS record (one zone-file line) of every configured DKIM key,\n" +
		"sign: false keys included, so they can be published or re-published."
	if name == "check" {
		about = "Looks up each configured key's record through the configured resolver\n" +
			"(delivery.dns.servers; empty = /etc/resolv.conf) and says per selector\n" +
			"whether it is published and matches the key. Exits 1 if any does not."
	}
	fs := newFlags("dkim "+name, usageLine, about, io)
	path := fs.String("config", "", "config file (required)")
	dom := fs.String("domain", "", "only keys of this signing domain (default: all)")
	fs.BoolVar(&sel.json, "json", false, "print JSON")
	if rc, ok := parseFlags(fs, args); !ok {
		return nil, sel, rc, false
	}
	if *path == "" {
		fmt.Fprintf(io.err, "jetrelay dkim %s: --config FILE is required\n", name)
		return nil, sel, 2, false
	}
	cfg, err := config.Load(*path)
	if cfg == nil {
		fmt.Fprintf(io.err, "jetrelay dkim %s: %v\n", name, err)
		return nil, sel, 1, false
	}
	if err != nil {
		fmt.Fprintf(io.err, "warning: %s has problems (run jetrelay check --config %s)\n", *path, *path)
	}
	sel.domain = strings.TrimSuffix(strings.ToLower(*dom), ".")
	return cfg, sel, 0, true
}

// configuredKey is one dkim.keys entry with its index.
type configuredKey struct {
	i int
	config.DKIMKey
}

// spec is the entry as dkim sees it.
func (k configuredKey) spec() dkim.KeySpec {
	return dkim.KeySpec{Domain: k.Domain, Selector: k.Selector, KeyFile: k.Key, Sign: k.Signs()}
}

// where names the entry's key setting with its line.
func (k configuredKey) where(cfg *config.Config) string {
	return fmt.Sprintf("line %d: dkim.keys[%d].key", cfg.Line("dkim", "keys", strconv.Itoa(k.i), "key"), k.i)
}

// selectKeys returns the configured keys of domain ("" = all).
func selectKeys(cfg *config.Config, domain string) []configuredKey {
	var out []configuredKey
	for i, k := range cfg.DKIM.Keys {
		if domain == "" || strings.TrimSuffix(strings.ToLower(k.Domain), ".") == domain {
			out = append(out, configuredKey{i, k})
		}
	}
	return out
}

// dnsRecord is one line of dkim dns --json.
type dnsRecord struct {
	Domain   string `json:"domain"`
	Selector string `json:"selector"`
	Sign     bool   `json:"sign"`
	Name     string `json:"name,omitempty"`
	TXT      string `json:"txt,omitempty"`
	Zone     string `json:"zone_line,omitempty"`
	Error    string `json:"error,omitempty"`
}

func runDKIMDNS(args []string, io stdio) int {
	cfg, sel, rc, ok := dkimConfig("dns", args, io)
	if !ok {
		return rc
	}
	keys := selectKeys(cfg, sel.domain)
	if len(keys) == 0 {
		fmt.Fprintf(io.err, "jetrelay dkim dns: no keys configured%s\n", forDomain(sel.domain))
		return 1
	}
	var recs []dnsRecord
	for _, k := range keys {
		r := dnsRecord{Domain: k.Domain, Selector: k.Selector, Sign: k.Signs()}
		key, err := dkim.LoadKey(k.Key)
		if err == nil {
			r.Name = dkim.RecordName(k.Selector, k.Domain)
			r.TXT, _ = dkim.TXTRecord(key)
			r.Zone, err = dkim.ZoneLine(k.Selector, k.Domain, key)
		}
		if err != nil {
			r.Error = err.Error()
			fmt.Fprintf(io.err, "%s: %v\n", k.where(cfg), err)
			rc = 1
		}
		recs = append(recs, r)
		if sel.json || err != nil {
			continue
		}
		if !k.Signs() {
			r.Zone += " ; sign: false (published, not signing)"
		}
		fmt.Fprintln(io.out, r.Zone)
	}
	if sel.json && printJSON(io, recs) != 0 {
		return 1
	}
	return rc
}

func forDomain(domain string) string {
	if domain == "" {
		return ""
	}
	return " for " + domain
}

func runDKIMCheck(args []string, io stdio) int {
	cfg, sel, rc, ok := dkimConfig("check", args, io)
	if !ok {
		return rc
	}
	keys := selectKeys(cfg, sel.domain)
	if len(keys) == 0 {
		fmt.Fprintf(io.err, "jetrelay dkim check: no keys configured%s\n", forDomain(sel.domain))
		return 1
	}
	d := cfg.Delivery.DNS
	dc, err := dnsclient.New(dnsclient.Options{Servers: d.Servers, Timeout: d.Timeout.D()})
	if err != nil {
		fmt.Fprintf(io.err, "jetrelay dkim check: %v\n", err)
		return 1
	}
	checks := make([]dkim.PublishedCheck, 0, len(keys))
	for _, k := range keys {
		c := dkim.CheckPublished(context.Background(), dnsTXT{dc}, k.spec())
		if c.State != dkim.Published {
			rc = 1
		}
		checks = append(checks, c)
		if !sel.json {
			fmt.Fprintf(io.out, "%s: %s\n", c.Name, publishedText(c, k))
		}
	}
	if sel.json {
		if printJSON(io, checks) != 0 {
			return 1
		}
	}
	return rc
}

// publishedText is one line (and the record to publish) of dkim check.
func publishedText(c dkim.PublishedCheck, k configuredKey) string {
	switch c.State {
	case dkim.Published:
		use := "signing"
		if !k.Signs() {
			use = "published only, sign: false"
		}
		return fmt.Sprintf("OK: matches the %s key in %s (%s)", c.Key, k.Key, use)
	case dkim.NotFound:
		return "MISSING: not published; publish:\n  " + c.Want
	case dkim.Mismatch:
		return fmt.Sprintf("MISMATCH: %s; the record should be:\n  %s", c.Detail, c.Want)
	}
	return "ERROR: " + c.Detail
}

// dnsTXT is dkim's TXT lookup through the DNS client delivery uses.
type dnsTXT struct{ c *dnsclient.Client }

func (r dnsTXT) LookupTXT(ctx context.Context, name string) ([]string, error) {
	resp, err := r.c.Query(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, fmt.Errorf("lookup %s: %w", name, err)
	}
	var out []string
	for _, rr := range resp.Answer {
		if txt, ok := rr.(*dns.TXT); ok {
			out = append(out, strings.Join(txt.Txt, ""))
		}
	}
	if resp.Rcode == dns.RcodeNameError || len(out) == 0 {
		return nil, fmt.Errorf("%s: %w (%s)", name, dkim.ErrNoRecord, dns.RcodeToString[resp.Rcode])
	}
	return out, nil
}

// checkDKIMKeys applies dkim's key rules (dkim.CheckKeys, the ones serve's
// signer enforces) for `jetrelay check`, naming each finding's YAML line.
// Empty names and missing files are left to config validation, which
// reports them on the same line already.
func checkDKIMKeys(cfg *config.Config) (warnings, errs []string) {
	specs := make([]dkim.KeySpec, len(cfg.DKIM.Keys))
	for i, k := range cfg.DKIM.Keys {
		specs[i] = configuredKey{i, k}.spec()
	}
	fields := map[string]string{"Domain": "domain", "Selector": "selector", "KeyFile": "key"}
	for _, f := range dkim.CheckKeys(specs) {
		k := cfg.DKIM.Keys[f.Key]
		if errors.Is(f.Err, fs.ErrNotExist) || k.Domain == "" || k.Selector == "" || k.Key == "" {
			continue
		}
		where := fmt.Sprintf("line %d: dkim.keys[%d]", cfg.Line("dkim", "keys", strconv.Itoa(f.Key)), f.Key)
		if y := fields[f.Field]; y != "" {
			where = fmt.Sprintf("line %d: dkim.keys[%d].%s", cfg.Line("dkim", "keys", strconv.Itoa(f.Key), y), f.Key, y)
		}
		if f.Severity == dkim.Warning {
			warnings = append(warnings, where+": "+f.Err.Error())
		} else {
			errs = append(errs, where+": "+f.Err.Error())
		}
	}
	return warnings, errs
}
