package main

import (
	"bytes"
	"flag"
	"fmt"
	"sort"
	"strings"
)

// How a command is described to --help, shell completion and the man page.
//
// There is one definition of each command: its line in commands() (name,
// summary, run function) and the flag set its run function builds with
// newFlags. `--help` prints that flag set; describe runs every command and
// subcommand with --help against a flagRecorder, which newFlags hands each
// flag set it builds, so completion and the man page read the very flags
// --help prints and cannot drift from them.
//
// Registering a command: one line in commands(). A command that dispatches
// to subcommands (`queue ls`, `dkim keygen`) also gets one line in
// subcommands(); each subcommand must build its flag set with
// newFlags("<command> <sub>", ...). TestCommandTable fails for a dispatcher
// that is not listed there.

// subcommands lists the subcommands of the commands that dispatch on their
// first argument, in the order help shows them.
func subcommands() map[string][]string {
	return map[string][]string{
		"auth":     {"bans", "unban"},
		"cluster":  {"status"},
		"console":  {"passwd"},
		"dkim":     {"keygen", "dns", "check"},
		"domain":   {"check"},
		"queue":    {"ls", "show", "retry", "hold", "release", "delete"},
		"shaping":  {"status", "resume"},
		"suppress": {"ls", "add", "rm"},
		"tls":      {"check"},
		"tlsrpt":   {"show", "send"},
		"user":     {"hash", "resume"},
		"webhooks": {"ls", "test", "replay"},
	}
}

// cmdDoc is one command or subcommand as --help shows it.
type cmdDoc struct {
	path    string // "serve", "queue ls"
	summary string // commands()'s line; a subcommand's usage line
	usage   string // after "jetrelay ": "queue ls [--domain D] ..."
	about   string // what it does (newFlags' about text)
	help    string // the whole --help output, for commands without a flag set
	flags   []flagDoc
	subs    []cmdDoc
}

// flagDoc is one flag of a flag set.
type flagDoc struct {
	name  string // without dashes
	arg   string // value placeholder ("FILE", "string"); "" for a boolean flag
	usage string
	def   string // default value as --help prints it; "" when zero
}

// flagRecorder is the stdout describe gives a command: newFlags appends
// every flag set it builds, and --help's text lands in the buffer.
type flagRecorder struct {
	bytes.Buffer
	sets []recordedFlags
}

// recordedFlags is one newFlags call.
type recordedFlags struct {
	usage, about string
	fs           *flag.FlagSet
}

// recordFlags hands fs to a describe run (see flagRecorder); otherwise it
// does nothing.
func recordFlags(io stdio, usageLine, about string, fs *flag.FlagSet) {
	if r, ok := io.out.(*flagRecorder); ok {
		r.sets = append(r.sets, recordedFlags{usage: usageLine, about: about, fs: fs})
	}
}

// describeAll describes every command, sorted by name, with their
// subcommands.
func describeAll() ([]cmdDoc, error) {
	cmds := commands()
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	subs := subcommands()
	docs := make([]cmdDoc, 0, len(names))
	for _, n := range names {
		d, err := describe(n, cmds[n], nil)
		if err != nil {
			return nil, err
		}
		d.summary = cmds[n].summary
		for _, s := range subs[n] {
			sd, err := describe(n, cmds[n], []string{s})
			if err != nil {
				return nil, err
			}
			sd.summary = strings.TrimSpace(strings.TrimPrefix(sd.usage, sd.path))
			d.subs = append(d.subs, sd)
		}
		docs = append(docs, d)
	}
	return docs, nil
}

// describe runs `jetrelay name [sub...] --help` and returns what it
// printed with the flag set of that (sub)command. A subcommand must build
// a flag set named after its path; a command may print help without one.
func describe(name string, c command, sub []string) (cmdDoc, error) {
	path := strings.Join(append([]string{name}, sub...), " ")
	rec := &flagRecorder{}
	var errb bytes.Buffer
	if rc := c.run(append(sub, "--help"), stdio{strings.NewReader(""), rec, &errb}); rc != 0 {
		return cmdDoc{}, fmt.Errorf("jetrelay %s --help: exit %d: %s", path, rc, strings.TrimSpace(errb.String()))
	}
	d := cmdDoc{path: path, help: rec.String()}
	for _, r := range rec.sets {
		if r.fs.Name() != path {
			continue
		}
		d.usage, d.about = r.usage, r.about
		r.fs.VisitAll(func(f *flag.Flag) { d.flags = append(d.flags, newFlagDoc(f)) })
		return d, nil
	}
	if len(sub) > 0 {
		return cmdDoc{}, fmt.Errorf("jetrelay %s --help built no flag set named %q (use newFlags)", path, path)
	}
	return d, nil
}

func newFlagDoc(f *flag.Flag) flagDoc {
	arg, usage := flag.UnquoteUsage(f)
	d := flagDoc{name: f.Name, arg: arg, usage: usage}
	if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && bf.IsBoolFlag() {
		d.arg = ""
	}
	switch f.DefValue {
	case "", "0", "false", "0s", "[]":
	default:
		d.def = f.DefValue
	}
	return d
}

// spelling is how help text writes the flag: -f for one letter, else
// --name (the flag package takes either).
func (f flagDoc) spelling() string {
	if len(f.name) == 1 {
		return "-" + f.name
	}
	return "--" + f.name
}

// walk calls fn for every command and subcommand of docs.
func walk(docs []cmdDoc, fn func(d cmdDoc)) {
	for _, d := range docs {
		fn(d)
		walk(d.subs, fn)
	}
}
