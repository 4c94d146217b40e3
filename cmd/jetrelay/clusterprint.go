package main

import (
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/jetrelay/jetrelay/relay/clusterview"
)

// printClusterStatus prints st as tables. sysErr is why the system
// account could not be used (nil: it was, or none was tried).
func printClusterStatus(sio stdio, st *clusterview.Status, sysErr error) {
	tw := tabwriter.NewWriter(sio.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tCLIENT\tROUTE\tSTATE\tRTT")
	for _, n := range st.Nodes {
		state, rtt := "up", "-"
		if !n.Up {
			state = "DOWN"
		}
		if n.RTTMillis > 0 {
			rtt = strconv.FormatFloat(n.RTTMillis, 'f', 2, 64) + "ms"
		}
		_ = tprintf(tw, "%s\t%s\t%s\t%s\t%s\n", n.Name, orDash(n.ClientAddr), orDash(n.RouteAddr), state, rtt)
	}
	_ = tw.Flush()
	if st.NodeSource != clusterview.SourceSystem {
		why := "no system account access"
		if sysErr != nil {
			why = "system account: " + sysErr.Error()
		}
		_ = tprintf(sio.out, "(%s: nodes are the streams' leaders and replicas; addresses and round trip "+
			"are known only for the server connected to)\n", why)
	}

	fmt.Fprintln(sio.out)
	tw = tabwriter.NewWriter(sio.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "STREAM\tLEADER\tREPLICAS\tCURRENT\tQUORUM")
	for _, s := range st.Streams {
		if s.Error != "" {
			_ = tprintf(tw, "%s\t-\t%s\t-\tunknown\n", s.Name, s.Error)
			continue
		}
		quorum := "yes"
		if !s.Quorum {
			quorum = "NO"
		}
		_ = tprintf(tw, "%s\t%s\t%s\t%d/%d\t%s\n", s.Name, orDash(s.Leader), replicaList(s.Replicas),
			s.Current, s.Configured, quorum)
	}
	_ = tw.Flush()

	c := st.Consumer
	fmt.Fprintln(sio.out)
	if c.Error != "" {
		_ = tprintf(sio.out, "consumer %s/%s: %s\n", c.Stream, c.Name, c.Error)
	} else {
		_ = tprintf(sio.out, "consumer %s/%s: %d pending, %d ack pending\n", c.Stream, c.Name, c.Pending, c.AckPending)
	}
	if len(st.Problems) > 0 {
		fmt.Fprintln(sio.out, "\nproblems:")
		for _, p := range st.Problems {
			_ = tprintf(sio.out, "  %s\n", p)
		}
	}
}

// replicaList is "n2 (lag 0), n3 (offline, lag 12)"; "-" for none.
func replicaList(rs []clusterview.Replica) string {
	if len(rs) == 0 {
		return "-"
	}
	parts := make([]string, 0, len(rs))
	for _, r := range rs {
		state := ""
		switch {
		case r.Offline:
			state = "offline, "
		case !r.Current:
			state = "behind, "
		}
		parts = append(parts, fmt.Sprintf("%s (%slag %d)", r.Name, state, r.Lag))
	}
	return strings.Join(parts, ", ")
}
