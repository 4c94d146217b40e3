package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/jetrelay/jetrelay/relay/safetext"
	"github.com/jetrelay/jetrelay/relay/submit"
)

const authAbout = `Shows and lifts AUTH brake bans (JetStream KV bucket jetrelay_auth, shared by
every jetrelay on the same NATS, so an unban holds on every node at once).
A client (an IPv4 address or an IPv6 /64) is banned after
submission.auth_failures.max failures in the window; a (user, client) pair
after max_per_user.

  bans             print client, user ("-" = the whole client), failures and
                   ban end, aligned (--json: one JSON object per line)
  unban IP         lift the ban of IP's client and of every user from it,
                   and reset their failure counters (exit 1 if it had
                   neither a ban nor a failure counted)
  unban --all      lift every ban and reset every counter

Works against any NATS jetrelay uses (--nats, --creds).`

func runAuth(args []string, sio stdio) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return authMain(ctx, args, sio)
}

// authCmd is one parsed `jetrelay auth` invocation.
type authCmd struct {
	sub  string
	ip   string
	all  bool
	json bool
	nf   *natsFlags
}

// authMain is runAuth with the caller's context (tests pass theirs).
func authMain(ctx context.Context, args []string, sio stdio) int {
	c, rc, ok := parseAuth(args, sio)
	if !ok {
		return rc
	}
	cfg, err := c.nf.loadConfig()
	if err != nil {
		_ = tprintf(sio.err, "jetrelay auth: %v\n", err)
		return 1
	}
	q, err := connectNATS(ctx, c.nf, "auth")
	if err != nil {
		_ = tprintf(sio.err, "jetrelay auth: %v\n", err)
		return 1
	}
	defer q.Close()
	b, err := submit.OpenBrake(ctx, submit.BrakeOptions{JetStream: q.JetStream(), Replicas: cfg.NATS.Replicas})
	if err != nil {
		_ = tprintf(sio.err, "jetrelay auth: %v\n", err)
		return 1
	}
	if c.sub == "bans" {
		return authBans(ctx, b, c.json, sio)
	}
	var n int
	if c.all {
		n, err = b.UnbanAll(ctx)
	} else {
		n, err = b.Unban(ctx, c.ip)
	}
	if err != nil {
		_ = tprintf(sio.err, "jetrelay auth: %v\n", err)
		return 1
	}
	what := "every client"
	if !c.all {
		what = c.ip
		if n == 0 {
			_ = tprintf(sio.err, "jetrelay auth: %s has no ban and no failures counted\n", c.ip)
			return 1
		}
	}
	_ = tprintf(sio.out, "unbanned %s: %s removed\n", what, plural(n, "record"))
	return 0
}

// parseAuth reads the subcommand, its flags and its arguments.
func parseAuth(args []string, sio stdio) (c authCmd, rc int, ok bool) {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintf(sio.out, "Usage: jetrelay auth bans [--json] | unban IP | unban --all [flags]\n\n%s\n", authAbout)
		if len(args) == 0 {
			return c, 2, false
		}
		return c, 0, false
	}
	c.sub = args[0]
	usage := map[string]string{"bans": "auth bans [--json]", "unban": "auth unban IP|--all"}[c.sub]
	if usage == "" {
		fmt.Fprintf(sio.err, "jetrelay auth: unknown subcommand %q (bans, unban)\n", c.sub)
		return c, 2, false
	}
	fs := newFlags("auth "+c.sub, usage, authAbout, sio)
	c.nf = addNATSFlags(fs)
	if c.sub == "bans" {
		fs.BoolVar(&c.json, "json", false, "one JSON object per line")
	} else {
		fs.BoolVar(&c.all, "all", false, "lift every ban")
	}
	pos, rc, ok := parseMixed(fs, args[1:])
	if !ok {
		return c, rc, false
	}
	want := 0
	if c.sub == "unban" && !c.all {
		want = 1
	}
	if len(pos) != want {
		fmt.Fprintf(sio.err, "jetrelay auth: usage: jetrelay %s\n", usage)
		return c, 2, false
	}
	if want == 1 {
		a, err := netip.ParseAddr(pos[0])
		if err != nil {
			_ = tprintf(sio.err, "jetrelay auth unban: %q is not an IP address\n", pos[0])
			return c, 2, false
		}
		c.ip = a.Unmap().String()
	}
	return c, 0, true
}

func authBans(ctx context.Context, b *submit.Brake, asJSON bool, sio stdio) int {
	bans, err := b.Bans(ctx)
	if err != nil {
		_ = tprintf(sio.err, "jetrelay auth: %v\n", err)
		return 1
	}
	if asJSON {
		for _, ban := range bans {
			raw, err := json.Marshal(ban)
			if err != nil {
				_ = tprintf(sio.err, "jetrelay auth: %v\n", err)
				return 1
			}
			_, _ = sio.out.Write(safetext.JSON(append(raw, '\n')))
		}
		return 0
	}
	tw := tabwriter.NewWriter(sio.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CLIENT\tUSER\tFAILURES\tUNTIL")
	for _, ban := range bans {
		_ = tprintf(tw, "%s\t%s\t%d\t%s\n", ban.Client, orDash(ban.User), ban.Failures,
			ban.Until.UTC().Format(time.RFC3339))
	}
	_ = tw.Flush()
	if len(bans) == 0 {
		fmt.Fprintln(sio.err, "no bans in force")
	}
	return 0
}
