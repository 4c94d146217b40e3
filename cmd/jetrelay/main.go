// Command jetrelay is an outbound SMTP relay that queues mail in NATS
// JetStream. This package holds flags and subcommands only: it builds
// components from the configuration and runs them.
package main

import (
	"fmt"
	"io"
	"os"
	"sort"
)

// command is one subcommand.
type command struct {
	summary string
	run     func(args []string, stdio stdio) int
}

// stdio bundles the streams a command uses (tests pass buffers).
type stdio struct {
	in       io.Reader
	out, err io.Writer
}

func commands() map[string]command {
	return map[string]command{
		// Help, completion and man are made from this table and the commands'
		// flag sets (cmdtable.go): a new command needs only its line here.
		"completion": {"print a shell completion script: completion bash|zsh|fish", runCompletion},
		"man":        {"print the man page (roff)", runMan},

		"serve":    {"run the relay (embedded NATS by default)", runServe},
		"check":    {"validate a config file and print every problem with its line", runCheck},
		"user":     {"manage submission users: hash (bcrypt a password read on stdin), resume NAME", runUser},
		"version":  {"print the version", runVersion},
		"dkim":     {"DKIM keys: keygen, dns, check", runDKIM},
		"domain":   {"check a sending domain's SPF, DKIM, DMARC, reverse DNS and bounce MX", runDomain},
		"logs":     {"show and follow delivery events", runLogs},
		"queue":    {"inspect and act on the queue: ls, show, retry, hold, release, delete", runQueue},
		"suppress": {"manage the suppression list: ls, add, rm", runSuppress},
		"bench":    {"load-test an SMTP submission service", runBench},
		"sink":     {"run a development SMTP sink that accepts and counts mail", runSink},
		"auth":     {"AUTH brake bans: bans, unban IP|--all", runAuth},
		"send":     {"send one test message through the relay and follow it", runSend},
		"cluster":  {"show the NATS cluster: nodes, stream leaders and replicas, backlog", runCluster},
		"shaping":  {"traffic shaping per provider: status, resume PROVIDER", runShaping},
		"console":  {"web console logins (console passwd NAME: bcrypt a password read on stdin)", runConsole},
		"stats":    {"delivery counts per user and domain, bounce rates, paused users", runStats},
		"tls":      {"check what delivery to a domain does about TLS: MTA-STS, DANE, live STARTTLS", runTLS},
		"tlsrpt":   {"TLS reporting (RFC 8460): show today's counters, send --now", runTLSRPT},
		"webhooks": {"delivery event webhooks: ls, test NAME, replay NAME --since D", runWebhooks},
	}
}

func main() {
	os.Exit(run(os.Args[1:], stdio{os.Stdin, os.Stdout, os.Stderr}))
}

func run(args []string, io stdio) int {
	cmds := commands()
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(io.out, cmds)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	if args[0] == "--version" || args[0] == "-version" {
		return runVersion(nil, io)
	}
	c, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(io.err, "jetrelay: unknown command %q\n\n", args[0])
		usage(io.err, cmds)
		return 2
	}
	return c.run(args[1:], io)
}

func usage(w io.Writer, cmds map[string]command) {
	fmt.Fprintln(w, "jetrelay: an outbound SMTP relay that queues mail in NATS JetStream")
	fmt.Fprintln(w, "\nUsage: jetrelay <command> [flags]\n\nCommands:")
	names := make([]string, 0, len(cmds))
	width := 0
	for n := range cmds {
		names = append(names, n)
		width = max(width, len(n))
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-*s  %s\n", width, n, cmds[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'jetrelay <command> --help' for a command's flags.")
}
