package main

import (
	"fmt"

	"github.com/jetrelay/jetrelay/relay/config"
)

// runReloadDiff is `check --reload-diff OLD NEW`: NEW's problems (a reload
// would refuse it), then the changed settings by reload class, from the
// same table the running relay uses (config.Diff). Exit 0 when NEW is
// valid, 1 when it is not, 2 on a usage error.
func runReloadDiff(args []string, io stdio) int {
	if len(args) != 2 {
		fmt.Fprintln(io.err, "jetrelay check: --reload-diff needs two files: OLD NEW")
		return 2
	}
	old, err := config.Load(args[0])
	if old == nil {
		fmt.Fprintf(io.err, "jetrelay check: %s: %v\n", args[0], err)
		return 1
	}
	next, err := config.Load(args[1])
	var problems []string
	if err != nil {
		problems = splitErrors(err)
	}
	if next != nil {
		_, errs := checkDKIMKeys(next)
		problems = append(problems, errs...)
	}
	for _, p := range problems {
		fmt.Fprintf(io.out, "%s: %s\n", args[1], p)
	}
	if len(problems) > 0 || next == nil {
		fmt.Fprintf(io.out, "%d problem(s) found: a reload would refuse %s and keep the running config\n",
			len(problems), args[1])
		return 1
	}
	ch := config.Diff(old, next)
	if ch.Empty() {
		fmt.Fprintln(io.out, "no settings changed")
		return 0
	}
	printKeys(io, "applied by a reload (SIGHUP):", ch.Live)
	printKeys(io, "need a restart (a reload keeps the running value):", ch.Restart)
	return 0
}

func printKeys(io stdio, title string, keys []string) {
	if len(keys) == 0 {
		return
	}
	fmt.Fprintln(io.out, title)
	for _, k := range keys {
		fmt.Fprintf(io.out, "  %s\n", k)
	}
}
