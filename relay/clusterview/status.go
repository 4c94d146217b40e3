// Package clusterview is jetrelay's view of the NATS cluster it stores its
// state in: every server (name, client and route address, up or down,
// round trip), the leader and replicas of every stream and KV bucket of
// the relay's account with their lag, and the delivery consumer's pending
// and ack-pending counts. `jetrelay cluster status` prints it, /metrics
// exposes it as gauges, /readyz asks QueueReady.
//
// Where the facts come from. Streams and the consumer come from the
// relay's own JetStream account (stream names from the meta leader, each
// stream's info from its leader, or from a member when the group has no
// leader). Servers come from the NATS system account when a connection to
// it is given (Options.System: the embedded server's queue.SystemUser):
// every running server answers $SYS.REQ.SERVER.PING.JSZ (the JetStream
// meta group: every known server, up or not), VARZ (client and route
// listen addresses) and IDZ (its identity: the time its answer takes is
// the round trip from the relay through the server it is connected to,
// and the route). Without system access (an external NATS
// whose operator gave jetrelay none) the servers are the names that lead
// or replicate a stream, "up" is what the groups say of them (a leader,
// or a replica not offline), and addresses and round trip
// are known only for the server connected to; Status.NodeSource says
// which view it is.
//
// Health. A stream has quorum when it has a leader and more than half of
// its configured replicas are current; it has lost replicas when fewer
// than configured are current (a replica catching up after a restart
// counts as lost until it is current). Status.Problems names every stream
// without quorum or with lost replicas, every server down, and every
// question that found no answer; an empty list is a healthy cluster.
package clusterview

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Node sources (Status.NodeSource).
const (
	SourceSystem  = "system"
	SourceStreams = "streams"
)

// Defaults for Options.
const (
	DefaultTimeout = 2 * time.Second
	DefaultGather  = 2 * time.Second
)

// Options say where to look.
type Options struct {
	// JetStream is the relay's account: its streams, KV buckets and the
	// delivery consumer. Required.
	JetStream jetstream.JetStream
	// Conn is JetStream's connection: without System, the server it is
	// connected to is the one whose address and round trip are known.
	// Required.
	Conn *nats.Conn
	// System is a connection in the NATS system account, or nil.
	System *nats.Conn
	// ConsumerStream and Consumer name the delivery consumer
	// (queue.StreamName, queue.ConsumerName).
	ConsumerStream, Consumer string
	// KnownStreams are looked at even when the stream list cannot be had
	// (no meta leader): the relay's own streams.
	KnownStreams []string
	// Timeout bounds each request (default DefaultTimeout); Gather is how
	// long a ping waits for servers that have not answered yet (default
	// DefaultGather).
	Timeout, Gather time.Duration
}

// Status is one look at the cluster. Its JSON form is what
// `jetrelay cluster status --json` prints.
type Status struct {
	Nodes    []Node   `json:"nodes"`
	Streams  []Stream `json:"streams"`
	Consumer Consumer `json:"consumer"`
	// NodeSource is SourceSystem or SourceStreams (see the package doc).
	NodeSource string `json:"node_source"`
	// Problems are what makes the cluster unhealthy, one line each.
	Problems []string `json:"problems"`
}

// Node is one NATS server.
type Node struct {
	Name       string `json:"name"`
	ClientAddr string `json:"client_addr"` // "" when unknown
	RouteAddr  string `json:"route_addr"`  // "" when unknown or not clustered
	Up         bool   `json:"up"`
	// RTTMillis is the round trip of a request from the relay to this
	// server and back (through the server the relay is connected to); 0
	// when unknown.
	RTTMillis float64 `json:"rtt_ms"`
}

// Stream is one stream (or KV bucket, KV_<bucket>) and its replica group.
type Stream struct {
	Name   string `json:"name"`
	Leader string `json:"leader"` // "" when the group has no leader
	// Replicas are the group's members other than the leader.
	Replicas []Replica `json:"replicas"`
	// Configured is the stream's replica count; Current counts the leader
	// and the current replicas.
	Configured int  `json:"configured_replicas"`
	Current    int  `json:"current_replicas"`
	Quorum     bool `json:"quorum"`
	// Error is why the stream's state is unknown ("" when known).
	Error string `json:"error,omitempty"`
}

// Replica is one follower of a stream's group.
type Replica struct {
	Name    string `json:"name"`
	Current bool   `json:"current"`
	Lag     uint64 `json:"lag"` // operations behind the leader
	// Offline: the group knows it shut down, or it is not current and the
	// leader has not heard from it within lostQuorumInterval (a kill -9
	// sends no shutdown notice).
	Offline bool `json:"offline"`
}

// Consumer is the delivery consumer's backlog.
type Consumer struct {
	Stream     string `json:"stream"`
	Name       string `json:"name"`
	Pending    uint64 `json:"pending"`     // entries not yet handed to a worker
	AckPending int    `json:"ack_pending"` // entries leased, not yet acknowledged
	Error      string `json:"error,omitempty"`
}

// Lost is how many configured replicas are not current.
func (s Stream) Lost() int { return max(s.Configured-s.Current, 0) }

// Healthy reports whether there are no problems.
func (st *Status) Healthy() bool { return len(st.Problems) == 0 }

// Collect looks at the cluster. It always returns a Status: what could
// not be learned is in Problems (and in the Error of its stream or
// consumer).
func Collect(ctx context.Context, o Options) *Status {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Gather <= 0 {
		o.Gather = DefaultGather
	}
	// The three questions go out at once: a degraded cluster makes each
	// wait for its timeout.
	st := &Status{Nodes: []Node{}, Problems: []string{}}
	var listErr error
	var sys *systemAnswers
	var wg sync.WaitGroup
	wg.Go(func() { st.Streams, listErr = streams(ctx, o) })
	wg.Go(func() { st.Consumer = consumer(ctx, o) })
	if o.System != nil {
		wg.Go(func() { sys = askSystem(ctx, o) })
	}
	wg.Wait()
	if sys != nil {
		st.Nodes, st.NodeSource = sys.nodes(st.Streams), SourceSystem
	} else {
		st.Nodes, st.NodeSource = streamNodes(o, st.Streams), SourceStreams
	}
	st.Problems = problems(st, listErr)
	return st
}

// problems lists what is wrong, streams first.
func problems(st *Status, listErr error) []string {
	out := []string{}
	if listErr != nil {
		out = append(out, listErr.Error())
	}
	for _, s := range st.Streams {
		if p := streamProblem(s); p != "" {
			out = append(out, p)
		}
	}
	if st.Consumer.Error != "" {
		out = append(out, fmt.Sprintf("consumer %s/%s: %s", st.Consumer.Stream, st.Consumer.Name, st.Consumer.Error))
	}
	for _, n := range st.Nodes {
		if !n.Up {
			out = append(out, "node "+n.Name+" is down")
		}
	}
	return out
}

// streamProblem describes what is wrong with s ("" when nothing).
func streamProblem(s Stream) string {
	if s.Error != "" {
		return fmt.Sprintf("stream %s: %s", s.Name, s.Error)
	}
	var gone []string
	for _, r := range s.Replicas {
		if !r.Current {
			state := "behind"
			if r.Offline {
				state = "offline"
			}
			gone = append(gone, r.Name+" "+state)
		}
	}
	sort.Strings(gone)
	detail := ""
	if len(gone) > 0 {
		detail = " (" + strings.Join(gone, ", ") + ")"
	}
	switch {
	case !s.Quorum:
		leader := s.Leader
		if leader == "" {
			leader = "none"
		}
		return fmt.Sprintf("stream %s has no quorum: leader %s, %d of %d replicas current%s",
			s.Name, leader, s.Current, s.Configured, detail)
	case s.Lost() > 0:
		return fmt.Sprintf("stream %s lost %d of %d replicas%s", s.Name, s.Lost(), s.Configured, detail)
	}
	return ""
}

// ForQueue returns Options for the relay's queue connection q (its
// streams, KV buckets and delivery consumer) and sys, a connection in the
// system account (nil: none).
func ForQueue(q *queue.Queue, sys *nats.Conn) Options {
	return Options{
		JetStream: q.JetStream(), Conn: q.Conn(), System: sys,
		ConsumerStream: queue.StreamName, Consumer: queue.ConsumerName,
		KnownStreams: []string{queue.StreamName, queue.ParkStreamName},
	}
}
