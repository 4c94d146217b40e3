package clusterview

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TestFromInfo judges replica groups as stream infos show them, including
// what a kill -9 looks like (no shutdown notice: the replica is only
// unheard from).
func TestFromInfo(t *testing.T) {
	peer := func(name string, current bool, active time.Duration, lag uint64) *jetstream.PeerInfo {
		return &jetstream.PeerInfo{Name: name, Current: current, Active: active, Lag: lag}
	}
	for _, tc := range []struct {
		name     string
		replicas int
		cluster  *jetstream.ClusterInfo
		current  int
		quorum   bool
		problem  string
	}{
		{"standalone", 1, &jetstream.ClusterInfo{Leader: "a"}, 1, true, ""},
		{"no cluster info", 1, nil, 1, true, ""},
		{"all current", 3, &jetstream.ClusterInfo{Leader: "a", Replicas: []*jetstream.PeerInfo{
			peer("b", true, time.Second, 0), peer("c", true, time.Second, 0)}}, 3, true, ""},
		{"shut down", 3, &jetstream.ClusterInfo{Leader: "a", Replicas: []*jetstream.PeerInfo{
			peer("b", true, time.Second, 0), {Name: "c", Offline: true, Active: time.Second}}},
			2, true, "stream S lost 1 of 3 replicas (c offline)"},
		{"killed, unheard since the election", 3, &jetstream.ClusterInfo{Leader: "a", Replicas: []*jetstream.PeerInfo{
			peer("b", true, time.Second, 0), peer("c", false, 0, 2)}},
			2, true, "stream S lost 1 of 3 replicas (c offline)"},
		{"killed, unheard for long", 3, &jetstream.ClusterInfo{Leader: "a", Replicas: []*jetstream.PeerInfo{
			peer("b", true, time.Second, 0), peer("c", false, time.Minute, 0)}},
			2, true, "stream S lost 1 of 3 replicas (c offline)"},
		{"catching up", 3, &jetstream.ClusterInfo{Leader: "a", Replicas: []*jetstream.PeerInfo{
			peer("b", true, time.Second, 0), peer("c", false, time.Second, 40)}},
			2, true, "stream S lost 1 of 3 replicas (c behind)"},
		{"leaderless", 3, &jetstream.ClusterInfo{Replicas: []*jetstream.PeerInfo{
			peer("a", true, 0, 0), {Name: "b", Offline: true}, {Name: "c", Offline: true}}},
			1, false, "stream S has no quorum: leader none, 1 of 3 replicas current (b offline, c offline)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := fromInfo(&jetstream.StreamInfo{Config: jetstream.StreamConfig{Name: "S", Replicas: tc.replicas},
				Cluster: tc.cluster})
			if s.Current != tc.current || s.Quorum != tc.quorum || streamProblem(s) != tc.problem {
				t.Errorf("current %d quorum %v problem %q; want %d %v %q", s.Current, s.Quorum, streamProblem(s),
					tc.current, tc.quorum, tc.problem)
			}
		})
	}
}
