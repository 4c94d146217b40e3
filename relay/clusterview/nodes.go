package clusterview

import (
	"context"
	"encoding/json"
	"net"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Subjects of the system account's pings (nats-server events.go,
// serverPingReqSubj): every running server answers.
const (
	pingJSZ  = "$SYS.REQ.SERVER.PING.JSZ"
	pingVARZ = "$SYS.REQ.SERVER.PING.VARZ"
	pingIDZ  = "$SYS.REQ.SERVER.PING.IDZ"
)

// maxPingAnswers bounds how many answers one ping reads.
const maxPingAnswers = 64

// nodeSet collects nodes by name.
type nodeSet map[string]*Node

func (s nodeSet) add(name string) *Node {
	if n, ok := s[name]; ok {
		return n
	}
	n := &Node{Name: name}
	s[name] = n
	return n
}

// sorted returns the nodes sorted by name (empty names dropped).
func (s nodeSet) sorted() []Node {
	out := make([]Node, 0, len(s))
	for name, n := range s {
		if name != "" {
			out = append(out, *n)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// addStreamMembers adds every server that leads or replicates a stream.
func (s nodeSet) addStreamMembers(streams []Stream) {
	for _, st := range streams {
		s.add(st.Leader)
		for _, r := range st.Replicas {
			s.add(r.Name)
		}
	}
}

// systemAnswers are the servers' answers to the system account's pings.
type systemAnswers struct {
	jsz  []answer[server.ServerAPIJszResponse]
	varz []answer[server.ServerAPIVarzResponse]
	idz  []answer[server.ServerID]
}

// askSystem pings every server through the system account; nil when
// none answered.
func askSystem(ctx context.Context, o Options) *systemAnswers {
	a := &systemAnswers{jsz: ping(ctx, o, pingJSZ, decodeAPI, jszComplete)}
	if len(a.jsz) == 0 {
		return nil
	}
	var wg sync.WaitGroup
	wg.Go(func() { a.varz = ping(ctx, o, pingVARZ, decodeAPI, atLeast[server.ServerAPIVarzResponse](len(a.jsz))) })
	wg.Go(func() { a.idz = ping(ctx, o, pingIDZ, decodeIDZ, atLeast[server.ServerID](len(a.jsz))) })
	wg.Wait()
	return a
}

// nodes lists every server the answers and the streams name: up when it
// answered.
func (a *systemAnswers) nodes(streams []Stream) []Node {
	set := nodeSet{}
	for _, r := range a.jsz {
		set.add(r.v.Server.Name).Up = true
		if m := r.v.Data.Meta; m != nil {
			set.add(m.Leader)
			for _, p := range m.Replicas {
				set.add(p.Name)
			}
		}
	}
	set.addStreamMembers(streams)
	for _, r := range a.varz {
		n := set.add(r.v.Data.Name)
		n.Up = true
		n.ClientAddr = hostPort(r.v.Data.Host, r.v.Data.Port)
		if r.v.Data.Cluster.Port > 0 {
			n.RouteAddr = hostPort(r.v.Data.Cluster.Host, r.v.Data.Cluster.Port)
		}
	}
	for _, r := range a.idz {
		set.add(r.v.Name).RTTMillis = millis(r.rtt)
	}
	return set.sorted()
}

// streamNodes is the node list without system access: the streams'
// members, up when a group sees them.
func streamNodes(o Options, streams []Stream) []Node {
	set := nodeSet{}
	set.addStreamMembers(streams)
	for _, st := range streams {
		if st.Leader != "" {
			set.add(st.Leader).Up = true
		}
		for _, r := range st.Replicas {
			if !r.Offline {
				set.add(r.Name).Up = true
			}
		}
	}
	if here := o.Conn.ConnectedServerName(); here != "" {
		n := set.add(here)
		n.Up = true
		n.ClientAddr = o.Conn.ConnectedAddr()
		if rtt, err := o.Conn.RTT(); err == nil {
			n.RTTMillis = millis(rtt)
		}
	}
	return set.sorted()
}

// jszComplete reports whether every JetStream server has answered: as
// many answers as the meta group has members, or one from a server that
// is not clustered.
func jszComplete(got []server.ServerAPIJszResponse) bool {
	for _, r := range got {
		if r.Data.Meta == nil && r.Server.Cluster == "" {
			return true
		}
		if r.Data.Meta != nil && r.Data.Meta.Size > 0 && len(got) >= r.Data.Meta.Size {
			return true
		}
	}
	return false
}

// atLeast is a completion test: n answers.
func atLeast[T any](n int) func([]T) bool {
	return func(got []T) bool { return len(got) >= n }
}

// answer is one server's answer to a ping and how long it took.
type answer[T any] struct {
	v   T
	rtt time.Duration
}

// ping publishes a system ping and gathers the answers until done says
// all are in, Options.Gather passes without a new one, or ctx ends.
// Answers that do not decode are skipped.
func ping[T any](ctx context.Context, o Options, subject string, decode func(*nats.Msg, *T) bool,
	done func([]T) bool) []answer[T] {
	inbox := o.System.NewRespInbox()
	sub, err := o.System.SubscribeSync(inbox)
	if err != nil {
		return nil
	}
	defer func() { _ = sub.Unsubscribe() }()
	sent := time.Now()
	if err := o.System.PublishRequest(subject, inbox, []byte("{}")); err != nil {
		return nil
	}
	var got []answer[T]
	var vals []T
	for len(got) < maxPingAnswers {
		wctx, cancel := context.WithTimeout(ctx, o.Gather)
		m, err := sub.NextMsgWithContext(wctx)
		cancel()
		if err != nil {
			break
		}
		var v T
		if decode(m, &v) {
			got = append(got, answer[T]{v: v, rtt: time.Since(sent)})
			if vals = append(vals, v); done(vals) {
				break
			}
		}
	}
	return got
}

// decodeAPI reads one server's answer (a ServerAPIResponse); a
// no-responders status or an error answer is not one.
func decodeAPI[T any](m *nats.Msg, v *T) bool {
	var probe struct {
		Server *server.ServerInfo `json:"server"`
		Error  *server.ApiError   `json:"error"`
		Data   json.RawMessage    `json:"data"`
	}
	if len(m.Data) == 0 || json.Unmarshal(m.Data, &probe) != nil || probe.Server == nil || probe.Error != nil ||
		len(probe.Data) == 0 || string(probe.Data) == "null" {
		return false
	}
	return json.Unmarshal(m.Data, v) == nil
}

// decodeIDZ reads one server's identity.
func decodeIDZ(m *nats.Msg, v *server.ServerID) bool {
	return len(m.Data) > 0 && json.Unmarshal(m.Data, v) == nil && v.Name != ""
}

func hostPort(host string, port int) string {
	if port <= 0 {
		return ""
	}
	return net.JoinHostPort(host, strconv.Itoa(port))
}

func millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
