package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/clusterview"
	"github.com/jetrelay/jetrelay/relay/safetext"
	"github.com/nats-io/nats.go"
)

const clusterUsage = `Usage: jetrelay cluster status [--json] [flags]

Shows the NATS cluster jetrelay stores its state in: every node, the
leader and replicas of every stream and KV bucket, and the delivery
consumer's backlog. Exit status 1 when a stream lost a replica or quorum,
a node is down, or NATS cannot be reached.

Run 'jetrelay cluster status --help' for its flags.
`

const clusterStatusAbout = `Prints every NATS node (name, client and route address, up or down, round
trip of a request from this command to it, through the server connected
to), the leader and replicas of each stream and KV bucket with how many
operations each replica lags behind, the delivery consumer's pending (not
yet handed to a worker) and ack-pending (leased) counts, and every problem
found.

Nodes come from the NATS system account: the embedded server's read-only
user jetrelay-sys (same password as the relay's user, found the same way),
or --system-creds / --system-user for an external NATS. Without system
access the nodes are the streams' leaders and replicas, and addresses and
round trip are known only for the server connected to (said in the output).

--json prints one object: nodes [{name, client_addr, route_addr, up,
rtt_ms}], streams [{name, leader, replicas [{name, current, lag, offline}],
configured_replicas, current_replicas, quorum, error}], consumer {stream,
name, pending, ack_pending, error}, node_source (system|streams), problems.

Exit status: 0 healthy; 1 a stream lost a replica or quorum (each named),
a node is down, something did not answer, or NATS is unreachable; 2 usage.`

// clusterTimeout bounds one look at the cluster.
const clusterTimeout = 15 * time.Second

func runCluster(args []string, sio stdio) int {
	return runGroup("cluster", clusterUsage, map[string]subcommand{
		"status": clusterStatusMain,
	}, args, sio)
}

// clusterStatusCmd is one parsed `jetrelay cluster status`.
type clusterStatusCmd struct {
	json                    bool
	timeout                 time.Duration
	nf                      *natsFlags
	sysUser, sysPass, sysCr string
}

func parseClusterStatus(args []string, sio stdio) (c clusterStatusCmd, rc int, ok bool) {
	fs := newFlags("cluster status", "cluster status [--json] [flags]", clusterStatusAbout, sio)
	c.nf = addNATSFlags(fs)
	fs.BoolVar(&c.json, "json", false, "print one JSON object")
	fs.DurationVar(&c.timeout, "timeout", clusterTimeout, "give up on NATS after this long")
	fs.StringVar(&c.sysCr, "system-creds", "", "credentials file of a NATS system account user (external NATS)")
	fs.StringVar(&c.sysUser, "system-user", "", "NATS system account user (with --system-password-file)")
	fs.StringVar(&c.sysPass, "system-password-file", "", "file holding --system-user's password")
	pos, rc, ok := parseMixed(fs, args)
	if !ok {
		return c, rc, false
	}
	if len(pos) > 0 || c.timeout <= 0 {
		fmt.Fprintln(sio.err, "jetrelay cluster status: usage: jetrelay cluster status [--json] [flags]")
		return c, 2, false
	}
	return c, 0, true
}

// clusterStatusMain is `cluster status` with the caller's context.
func clusterStatusMain(ctx context.Context, args []string, sio stdio) int {
	c, rc, ok := parseClusterStatus(args, sio)
	if !ok {
		return rc
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	q, err := connectNATS(ctx, c.nf, "cluster status")
	if err != nil {
		_ = tprintf(sio.err, "jetrelay cluster status: %v\n", err)
		return 1
	}
	defer q.Close()
	sys, sysErr := c.connectSystem()
	if sys != nil {
		defer sys.Close()
	}
	st := clusterview.Collect(ctx, clusterview.ForQueue(q, sys))
	if c.json {
		raw, err := json.MarshalIndent(st, "", "  ")
		if err != nil {
			_ = tprintf(sio.err, "jetrelay cluster status: %v\n", err)
			return 1
		}
		_, _ = sio.out.Write(safetext.JSON(append(raw, '\n')))
	} else {
		printClusterStatus(sio, st, sysErr)
	}
	if !st.Healthy() {
		_ = tprintf(sio.err, "jetrelay cluster status: %s\n", strings.Join(st.Problems, "; "))
		return 1
	}
	return 0
}

// connectSystem connects to the NATS system account: with --system-*, or
// as the embedded server's system user when the relay's user is the
// embedded one. nil, nil: no system access to try.
func (c clusterStatusCmd) connectSystem() (*nats.Conn, error) {
	o, err := c.nf.natsOptions()
	if err != nil {
		return nil, err
	}
	var auth nats.Option
	switch {
	case c.sysCr != "":
		auth = nats.UserCredentials(c.sysCr)
	case c.sysUser != "":
		pass, err := readSecret(c.sysPass)
		if err != nil {
			return nil, err
		}
		auth = nats.UserInfo(c.sysUser, pass)
	case o.User == queue.EmbeddedUser && o.Credentials == "":
		pass := o.Password
		if pass == "" {
			if pass, err = readSecret(o.PasswordFile); err != nil {
				return nil, err
			}
		}
		auth = nats.UserInfo(queue.SystemUser, pass)
	default:
		return nil, nil
	}
	nc, err := nats.Connect(o.URL, auth, nats.Name("jetrelay cluster status (system)"), nats.MaxReconnects(0))
	if err != nil {
		return nil, err
	}
	return nc, nil
}

// readSecret reads a password file ("" when no file).
func readSecret(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}
