package main

import (
	"errors"
	"flag"
	"fmt"

	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/deliver"
)

// newFlags returns a flag set whose --help prints what the command does.
func newFlags(name, usageLine, about string, io stdio) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	recordFlags(io, usageLine, about, fs) // completion and man read these flags too (cmdtable.go)
	fs.SetOutput(io.err)
	fs.Usage = func() {
		fmt.Fprintf(io.out, "Usage: jetrelay %s\n\n%s\n", usageLine, about)
		fs.SetOutput(io.out)
		if hasFlags(fs) {
			fmt.Fprintln(io.out, "\nFlags:")
			fs.PrintDefaults()
		}
		fs.SetOutput(io.err)
	}
	return fs
}

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

// parseFlags parses args; ok=false means return code rc.
func parseFlags(fs *flag.FlagSet, args []string) (rc int, ok bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, false
		}
		return 2, false
	}
	return 0, true
}

// parseMixed parses flags that may come before or after positional
// arguments (`suppress add ADDR --reason R`, `queue show ID --json`).
func parseMixed(fs *flag.FlagSet, args []string) (pos []string, rc int, ok bool) {
	for {
		if rc, ok := parseFlags(fs, args); !ok {
			return nil, rc, false
		}
		if fs.NArg() == 0 {
			return pos, 0, true
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func runCheck(args []string, io stdio) int {
	fs := newFlags("check", "check --config FILE [--print] | check --reload-diff OLD NEW",
		"Validates a configuration file: unknown keys (with the nearest valid key), bad\n"+
			"values, missing files and DKIM keys. Prints every problem and warning with its\n"+
			"YAML line and exits 1 if there is any problem. --print writes the effective\n"+
			"configuration (defaults filled in, secrets redacted) as YAML to stdout and the\n"+
			"findings to stderr. With --reload-diff it checks NEW and lists which settings\n"+
			"changed from OLD, split into those a reload (SIGHUP) applies and those that\n"+
			"need a restart.", io)
	path := fs.String("config", "", "config file to check (required)")
	printCfg := fs.Bool("print", false, "print the effective configuration as YAML (secrets redacted)")
	diff := fs.Bool("reload-diff", false, "compare two config files: OLD NEW")
	if rc, ok := parseFlags(fs, args); !ok {
		return rc
	}
	if *diff {
		return runReloadDiff(fs.Args(), io)
	}
	if *path == "" {
		fmt.Fprintln(io.err, "jetrelay check: --config FILE is required")
		return 2
	}
	report := io.out
	if *printCfg {
		report = io.err
	}
	cfg, err := config.Load(*path)
	var problems []string
	if err != nil {
		problems = append(problems, splitErrors(err)...)
	}
	if cfg != nil {
		warnings, errs := checkDKIMKeys(cfg)
		problems = append(problems, errs...)
		for _, err := range deliver.CheckSources(egressSources(cfg)) {
			problems = append(problems, err.Error())
		}
		for _, w := range append(configWarnings(cfg), warnings...) {
			fmt.Fprintf(report, "%s: warning: %s\n", *path, w)
		}
	}
	for _, p := range problems {
		fmt.Fprintf(report, "%s: %s\n", *path, p)
	}
	if *printCfg && cfg != nil {
		if err := printEffective(cfg, io); err != nil {
			problems = append(problems, err.Error())
		}
	}
	if len(problems) > 0 {
		fmt.Fprintf(report, "%d problem(s) found\n", len(problems))
		return 1
	}
	fmt.Fprintf(report, "%s: OK\n", *path)
	return 0
}

// configWarnings lists config.Warnings as lines (a host name that is not a
// fully qualified domain name, ...).
func configWarnings(cfg *config.Config) []string {
	var out []string
	for _, w := range cfg.Warnings() {
		out = append(out, w.Error())
	}
	return out
}

// printEffective writes the effective configuration as YAML to stdout.
func printEffective(cfg *config.Config, io stdio) error {
	b, err := cfg.EffectiveYAML()
	if err != nil {
		return fmt.Errorf("--print: %w", err)
	}
	fmt.Fprintf(io.out, "# effective configuration of %s (defaults filled in, secrets redacted)\n", cfg.Path)
	_, err = io.out.Write(b)
	return err
}

// splitErrors flattens an errors.Join tree into lines.
func splitErrors(err error) []string {
	var out []string
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			out = append(out, splitErrors(e)...)
		}
		return out
	}
	return []string{err.Error()}
}
