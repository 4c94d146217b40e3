package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/jetrelay/jetrelay/relay/clusterview/clusterviewtest"
	"github.com/rs/zerolog"
)

func TestClusterStatusStandalone(t *testing.T) {
	t.Parallel()
	o := newOpsEnv(t)
	queuetest.EnqueueTo(t, o.q, "example.org")

	rc, out, errOut := runOps(t, clusterStatusMain, o.args("--json")...)
	if rc != 0 {
		t.Fatalf("rc %d: %s%s", rc, out, errOut)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal([]byte(out), &top); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	var keys []string
	for k := range top {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if want := []string{"consumer", "node_source", "nodes", "problems", "streams"}; !slices.Equal(keys, want) {
		t.Errorf("keys %q, want %q", keys, want)
	}
	var st struct {
		Nodes []struct {
			Name       string
			ClientAddr string `json:"client_addr"`
			Up         bool
		}
		Streams []struct {
			Name, Leader string
			Replicas     []json.RawMessage
		}
		Consumer struct {
			Pending    *uint64 `json:"pending"`
			AckPending *int    `json:"ack_pending"`
		}
		NodeSource string `json:"node_source"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Nodes) != 1 || !st.Nodes[0].Up || st.Nodes[0].ClientAddr == "" || st.NodeSource != "system" {
		t.Errorf("nodes %+v from %s", st.Nodes, st.NodeSource)
	}
	names := map[string]bool{}
	for _, s := range st.Streams {
		names[s.Name] = s.Leader != "" && s.Replicas != nil && len(s.Replicas) == 0
	}
	if !names[queue.StreamName] || !names[queue.ParkStreamName] || !names["JETRELAY_EVENTS"] {
		t.Errorf("streams %+v", st.Streams)
	}
	if st.Consumer.Pending == nil || *st.Consumer.Pending != 1 || st.Consumer.AckPending == nil {
		t.Errorf("consumer %+v", st.Consumer)
	}

	rc, out, errOut = runOps(t, clusterStatusMain, o.args()...)
	if rc != 0 || !regexp.MustCompile(`(?m)^JETRELAY_SPOOL +jetrelay +- +1/1 +yes$`).MatchString(out) ||
		!strings.Contains(out, "1 pending, 0 ack pending") {
		t.Errorf("rc %d:\n%s%s", rc, out, errOut)
	}

	// No system access (a wrong system user): the streams' members, said so.
	pw := filepath.Join(o.dataDir, queue.PasswordFileName)
	rc, out, errOut = runOps(t, clusterStatusMain, o.args("--system-user", "nobody", "--system-password-file", pw)...)
	if rc != 0 || !regexp.MustCompile(`(?m)^jetrelay +127\.0\.0\.1:[0-9]+ +- +up +[0-9.]+ms$`).MatchString(out) ||
		!strings.Contains(out, "(system account: ") || !strings.Contains(out, "nodes are the streams' leaders") {
		t.Errorf("without system access: rc %d:\n%s%s", rc, out, errOut)
	}
}

func TestClusterStatusUsageAndUnreachable(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		rc   int
		err  string
	}{
		{nil, 2, "Usage: jetrelay cluster status"},
		{[]string{"bogus"}, 2, `unknown command "bogus"`},
		{[]string{"status", "extra"}, 2, "usage:"},
		{[]string{"status", "--nats", "nats://127.0.0.1:1", "--timeout", "5s"}, 1, "connect to NATS nats://127.0.0.1:1"},
	} {
		var out, errb strings.Builder
		if rc := runCluster(tc.args, stdio{strings.NewReader(""), &out, &errb}); rc != tc.rc ||
			!strings.Contains(errb.String(), tc.err) {
			t.Errorf("%q: rc %d, stderr %q; want %d, %q", tc.args, rc, errb.String(), tc.rc, tc.err)
		}
	}
}

func TestClusterStatusThreeNodes(t *testing.T) {
	t.Parallel()
	c := clusterviewtest.Run(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	q, err := queue.Open(ctx, queue.Options{URL: c.Nodes[0].URL(), User: queue.EmbeddedUser,
		Password: clusterviewtest.Password, Replicas: 3, Logger: zerolog.New(zerolog.NewTestWriter(t))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(q.Close)
	pw := filepath.Join(t.TempDir(), "nats.password")
	if err := os.WriteFile(pw, []byte(clusterviewtest.Password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"--nats", c.Nodes[0].URL(), "--user", queue.EmbeddedUser, "--password-file", pw}

	var rc int
	var out, errOut string
	queuetest.Eventually(t, 60*time.Second, "exit 0 on a healthy cluster", func() bool {
		rc, out, errOut = runOps(t, clusterStatusMain, args...)
		return rc == 0
	})
	for _, nd := range c.Nodes {
		row := `(?m)^` + nd.Name + ` +` + regexp.QuoteMeta(strings.TrimPrefix(nd.URL(), "nats://")) + ` +` +
			regexp.QuoteMeta(nd.ClusterAddr()) + ` +up +[0-9.]+ms$`
		if !regexp.MustCompile(row).MatchString(out) {
			t.Errorf("no row %s in\n%s", row, out)
		}
	}

	c.Stop(2)
	queuetest.Eventually(t, 90*time.Second, "exit 1 naming both streams", func() bool {
		rc, out, errOut = runOps(t, clusterStatusMain, args...)
		return rc == 1 && strings.Contains(errOut, "stream JETRELAY_SPOOL lost 1 of 3 replicas (n3 offline)") &&
			strings.Contains(errOut, "stream JETRELAY_PARKED lost 1 of 3 replicas (n3 offline)")
	})
	if !regexp.MustCompile(`(?m)^n3 +- +- +DOWN +-$`).MatchString(out) || !strings.Contains(errOut, "node n3 is down") {
		t.Errorf("n3 not shown down:\n%s%s", out, errOut)
	}
	t.Logf("one node down:\n%s%s", out, errOut)
}
