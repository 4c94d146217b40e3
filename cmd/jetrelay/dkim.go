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
)

// keyFileMode is how keygen writes a private key; checkDKIMKeys warns about
// key files that group or others can access.
const (
	keyFileMode   fs.FileMode = 0o600
	groupOtherRWX fs.FileMode = 0o077
)

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
	for _, k := range cfg.DKIM.Keys {
		specs = append(specs, dkim.KeySpec{Domain: k.Domain, Selector: k.Selector, KeyFile: k.Key, Sign: k.Signs()})
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

// dkimConfig loads the config for dns and check. Problems elsewhere in the
// file are reported but do not stop the command; an unreadable file does.
func dkimConfig(name string, args []string, io stdio) (cfg *config.Config, domain string, rc int, ok bool) {
	usageLine := "dkim " + name + " --config FILE [--domain D]"
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
	if rc, ok := parseFlags(fs, args); !ok {
		return nil, "", rc, false
	}
	if *path == "" {
		fmt.Fprintf(io.err, "jetrelay dkim %s: --config FILE is required\n", name)
		return nil, "", 2, false
	}
	cfg, err := config.Load(*path)
	if cfg == nil {
		fmt.Fprintf(io.err, "jetrelay dkim %s: %v\n", name, err)
		return nil, "", 1, false
	}
	if err != nil {
		fmt.Fprintf(io.err, "warning: %s has problems (run jetrelay check --config %s)\n", *path, *path)
	}
	return cfg, strings.TrimSuffix(strings.ToLower(*dom), "."), 0, true
}

// configuredKey is one dkim.keys entry with its index.
type configuredKey struct {
	i int
	config.DKIMKey
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

func runDKIMDNS(args []string, io stdio) int {
	cfg, domain, rc, ok := dkimConfig("dns", args, io)
	if !ok {
		return rc
	}
	keys := selectKeys(cfg, domain)
	if len(keys) == 0 {
		fmt.Fprintf(io.err, "jetrelay dkim dns: no keys configured%s\n", forDomain(domain))
		return 1
	}
	for _, k := range keys {
		key, err := dkim.LoadKey(k.Key)
		var line string
		if err == nil {
			line, err = dkim.ZoneLine(k.Selector, k.Domain, key)
		}
		if err != nil {
			fmt.Fprintf(io.err, "%s: %v\n", k.where(cfg), err)
			rc = 1
			continue
		}
		if !k.Signs() {
			line += " ; sign: false (published, not signing)"
		}
		fmt.Fprintln(io.out, line)
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
	cfg, domain, rc, ok := dkimConfig("check", args, io)
	if !ok {
		return rc
	}
	keys := selectKeys(cfg, domain)
	if len(keys) == 0 {
		fmt.Fprintf(io.err, "jetrelay dkim check: no keys configured%s\n", forDomain(domain))
		return 1
	}
	r := dkim.Resolver{Servers: cfg.Delivery.DNS.Servers, Timeout: cfg.Delivery.DNS.Timeout.D()}
	for _, k := range keys {
		name := strings.TrimSuffix(dkim.RecordName(k.Selector, k.Domain), ".")
		msg, good := checkPublished(context.Background(), r, k)
		fmt.Fprintf(io.out, "%s: %s\n", name, msg)
		if !good {
			rc = 1
		}
	}
	return rc
}

// checkPublished compares one key's published record with the key file.
func checkPublished(ctx context.Context, r dkim.Resolver, k configuredKey) (msg string, ok bool) {
	key, err := dkim.LoadKey(k.Key)
	if err != nil {
		return "ERROR: " + err.Error(), false
	}
	line, err := dkim.ZoneLine(k.Selector, k.Domain, key)
	if err != nil {
		return "ERROR: " + err.Error(), false
	}
	txts, err := r.LookupTXT(ctx, dkim.RecordName(k.Selector, k.Domain))
	switch {
	case errors.Is(err, dkim.ErrNoRecord):
		return "MISSING: not published; publish:\n  " + line, false
	case err != nil:
		return "ERROR: " + err.Error(), false
	case len(txts) > 1:
		// RFC 6376 §3.6.2.2: several TXT records give undefined results.
		return fmt.Sprintf("MISMATCH: %d TXT records, want exactly one:\n  %s", len(txts), line), false
	}
	if err := dkim.MatchRecord(txts[0], key); err != nil {
		return fmt.Sprintf("MISMATCH: %v; the record should be:\n  %s", err, line), false
	}
	use := "signing"
	if !k.Signs() {
		use = "published only, sign: false"
	}
	return fmt.Sprintf("OK: matches the %s key in %s (%s)", dkim.Describe(key), k.Key, use), true
}

// checkDKIMKeys loads every configured key for `jetrelay check`: errors for
// keys that cannot sign (unreadable, not a key, RSA below 1024 bits,
// the same selector twice), warnings for RSA below 2048 bits, key files
// that group or others can access, and domains left without a signing key.
// A missing file is left to config validation, which reports it on the
// same line already.
func checkDKIMKeys(cfg *config.Config) (warnings, errs []string) {
	seen := make(map[string]bool)
	signing := make(map[string]bool)
	for i, ck := range cfg.DKIM.Keys {
		k := configuredKey{i, ck}
		domain := strings.TrimSuffix(strings.ToLower(k.Domain), ".")
		id := k.Selector + "._domainkey." + domain
		if seen[id] {
			errs = append(errs, fmt.Sprintf("line %d: dkim.keys[%d].selector: %s is configured twice",
				cfg.Line("dkim", "keys", strconv.Itoa(i), "selector"), i, id))
		}
		seen[id] = true
		signing[domain] = signing[domain] || k.Signs()
		if k.Key == "" {
			continue // config validation: "name the PEM key file"
		}
		w, e := checkKeyFile(k.Key)
		for _, s := range w {
			warnings = append(warnings, k.where(cfg)+": "+s)
		}
		if e != "" {
			errs = append(errs, k.where(cfg)+": "+e)
		}
	}
	for i, k := range cfg.DKIM.Keys {
		domain := strings.TrimSuffix(strings.ToLower(k.Domain), ".")
		if domain != "" && !signing[domain] {
			warnings = append(warnings, fmt.Sprintf("line %d: dkim.keys[%d]: no key of %s has sign: true; its mail goes out unsigned",
				cfg.Line("dkim", "keys", strconv.Itoa(i)), i, domain))
			signing[domain] = true // once per domain
		}
	}
	return warnings, errs
}

// checkKeyFile inspects one key file: warnings and at most one error.
func checkKeyFile(path string) (warnings []string, errMsg string) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ""
	}
	if err != nil {
		return nil, err.Error()
	}
	if perm := fi.Mode().Perm(); perm&groupOtherRWX != 0 {
		warnings = append(warnings, fmt.Sprintf("key file %s is accessible by group or others (mode %04o): chmod 600 %s", path, perm, path))
	}
	key, err := dkim.LoadKey(path)
	if errors.Is(err, dkim.ErrWeakKey) {
		return warnings, "refused: " + err.Error()
	}
	if err != nil {
		return warnings, err.Error()
	}
	if bits := dkim.KeyBits(key); bits > 0 && bits < dkim.RecommendedRSABits {
		warnings = append(warnings, fmt.Sprintf("%s: %d-bit RSA key; RFC 8301 §3.1 recommends %d bits: generate a new key under a new selector (jetrelay dkim keygen) and rotate",
			path, bits, dkim.RecommendedRSABits))
	}
	return warnings, ""
}
