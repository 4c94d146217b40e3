package dkim

// The key rules, in one place: NewSigner enforces the errors, and
// `jetrelay check` reports the errors and the warnings, so the two cannot
// disagree about a configuration.

import (
	"crypto"
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// groupOtherRWX are the permission bits that make a key file readable (or
// writable) by others than its owner.
const groupOtherRWX fs.FileMode = 0o077

// Severity says whether a Finding stops NewSigner.
type Severity int

// Severities.
const (
	Error   Severity = iota // NewSigner refuses the key set
	Warning                 // advice; signing works
)

// Finding is one result of CheckKeys about specs[Key]. Field names the
// KeySpec field it is about ("Domain", "Selector", "KeyFile"), or is empty
// for the entry as a whole.
type Finding struct {
	Key      int
	Field    string
	Severity Severity
	Err      error
}

// CheckKeys applies every key rule to specs without building a Signer.
// Errors (what NewSigner refuses): a domain or selector that cannot name a
// key record, the same selector of a domain twice, a key file that cannot
// be read or is not a usable key (RSA below MinRSABits wraps ErrWeakKey; a
// missing file wraps fs.ErrNotExist). Warnings: RSA below
// RecommendedRSABits (RFC 8301 §3.1), a key file group or others can
// access, and a domain none of whose keys signs. Each file is read once.
func CheckKeys(specs []KeySpec) []Finding {
	_, findings := checkKeys(specs)
	return findings
}

// checkKeys returns the usable keys (in order) and every finding.
func checkKeys(specs []KeySpec) ([]Key, []Finding) {
	var keys []Key
	var out []Finding
	files := make(map[string]keyFile)
	seen := make(map[string]bool)
	signing := make(map[string]bool)
	for i, spec := range specs {
		k := Key{Domain: normalizeDomain(spec.Domain), Selector: spec.Selector, File: spec.KeyFile, Sign: spec.Sign}
		if err := CheckNames(k.Domain, k.Selector); err != nil {
			field := "Selector"
			if k.Domain == "" || CheckNames(k.Domain, "s") != nil {
				field = "Domain"
			}
			out = append(out, Finding{Key: i, Field: field, Severity: Error, Err: err})
			continue
		}
		id := k.Selector + "._domainkey." + k.Domain
		if seen[id] {
			err := fmt.Errorf("%s is configured twice", id)
			out = append(out, Finding{Key: i, Field: "Selector", Severity: Error, Err: err})
			continue
		}
		seen[id] = true
		signing[k.Domain] = signing[k.Domain] || k.Sign
		f, ok := files[spec.KeyFile]
		if !ok {
			f = loadKeyFile(spec.KeyFile)
			files[spec.KeyFile] = f
		}
		for _, w := range f.warnings {
			out = append(out, Finding{Key: i, Field: "KeyFile", Severity: Warning, Err: w})
		}
		if f.err != nil {
			out = append(out, Finding{Key: i, Field: "KeyFile", Severity: Error, Err: f.err})
			continue
		}
		k.Signer = f.signer
		keys = append(keys, k)
	}
	warned := make(map[string]bool)
	for i, spec := range specs {
		d := normalizeDomain(spec.Domain)
		if seen[spec.Selector+"._domainkey."+d] && !signing[d] && !warned[d] {
			warned[d] = true // once per domain
			out = append(out, Finding{Key: i, Severity: Warning,
				Err: fmt.Errorf("no key of %s has sign: true; its mail goes out unsigned", d)})
		}
	}
	return keys, out
}

// keyFile is one key file, loaded and inspected once.
type keyFile struct {
	signer   crypto.Signer
	err      error
	warnings []error
}

// loadKeyFile loads a key and collects the file's warnings.
func loadKeyFile(path string) keyFile {
	var f keyFile
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&groupOtherRWX != 0 {
		f.warnings = append(f.warnings, fmt.Errorf(
			"key file %s is accessible by group or others (mode %04o): chmod 600 %s", path, fi.Mode().Perm(), path))
	}
	f.signer, f.err = LoadKey(path)
	if errors.Is(f.err, ErrWeakKey) {
		f.err = fmt.Errorf("refused: %w", f.err)
	}
	if bits := KeyBits(f.signer); f.err == nil && bits > 0 && bits < RecommendedRSABits {
		f.warnings = append(f.warnings, fmt.Errorf("%s: %d-bit RSA key; RFC 8301 §3.1 recommends %d bits: "+
			"generate a new key under a new selector (jetrelay dkim keygen) and rotate",
			path, bits, RecommendedRSABits))
	}
	return f
}
