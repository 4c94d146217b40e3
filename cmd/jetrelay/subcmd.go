package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// subcommand runs one subcommand of a command group; ctx ends on SIGINT or
// SIGTERM.
type subcommand func(ctx context.Context, args []string, sio stdio) int

// runGroup dispatches "jetrelay NAME SUB args...": no SUB or an unknown one
// prints usage to stderr (exit 2), -h/--help/help prints it to stdout.
func runGroup(name, usage string, subs map[string]subcommand, args []string, sio stdio) int {
	if len(args) == 0 {
		fmt.Fprint(sio.err, usage)
		return 2
	}
	switch args[0] {
	case "-h", "--help", "help":
		fmt.Fprint(sio.out, usage)
		return 0
	}
	sub, ok := subs[args[0]]
	if !ok {
		_ = tprintf(sio.err, "jetrelay %s: unknown command %q\n\n", name, args[0])
		fmt.Fprint(sio.err, usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return sub(ctx, args[1:], sio)
}
