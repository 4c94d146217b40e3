package clustertest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/relaytest"
	"github.com/jetrelay/jetrelay/relay/shaping"
	"golang.org/x/crypto/bcrypt"
)

// The provider limits of the shaping test.
const (
	shapeConns    = 2
	shapeRate     = "600/m"
	shapeMessages = 150
)

// TestShapingAcrossProcesses (issue 16, point 7): a provider limit of 2
// connections and 600/m holds under 150 queued messages, across two
// `jetrelay serve` processes on one NATS (the first's embedded server,
// which the second reaches by nats.url). Three domains whose MX hosts are
// under .prov.test share the provider; the fake MX sees at most 2
// connections at once and, in any window of W seconds, at most 10·W plus
// the pace's burst (shaping.Rate.Burst) arrivals; every message arrives
// exactly once and every submission got 250. `jetrelay shaping status
// --json` against the first process lists the provider with its limits.
//
// With the default timeouts.idle: an idle connection of a provider gives
// its cluster-wide slot back after 2 s (relay/deliver sharedIdle), and an
// entry deferred while waiting for a slot is due when the wait ends, not
// a retry interval later.
func TestShapingAcrossProcesses(t *testing.T) {
	bin, _ := binaries(t)
	mx := relaytest.StartMeasureMX(t, "127.0.0.1", 0) // the zone below names 127.0.0.1
	zone := relaytest.NewZone()
	zone.AddA("mx1.prov.test", "127.0.0.1")
	zone.AddA("mx2.prov.test", "127.0.0.1")
	zone.AddA("mx3.prov.test", "127.0.0.1")
	for i := 1; i <= 3; i++ {
		zone.AddMX(fmt.Sprintf("d%d.test", i), 10, fmt.Sprintf("mx%d.prov.test", i))
	}
	dnsAddr := relaytest.FakeDNS(t, zone)
	nodes := startShapingNodes(t, bin, dnsAddr, mx.Addr)

	ids := submitSplit(t, nodes)
	deadline := time.Now().Add(2 * time.Minute)
	for len(mx.Arrivals()) < len(ids) && time.Now().Before(deadline) {
		for _, n := range nodes {
			if n.Exited() {
				t.Fatalf("%s exited:\n%s", n.Name, n.LogTail(4000))
			}
		}
		time.Sleep(100 * time.Millisecond) // polling the fake MX
	}
	arr := mx.Arrivals()
	got := map[string]int{}
	for _, a := range arr {
		got[a.ID]++
	}
	for _, id := range ids {
		if got[id] != 1 {
			t.Errorf("%s arrived %d times, want once", id, got[id])
		}
	}
	if len(arr) != len(ids) {
		t.Errorf("%d arrivals for %d messages", len(arr), len(ids))
	}
	checkShapingLimits(t, mx, arr)
	checkShapingStatus(t, bin, nodes[0])
	for _, n := range nodes {
		b, _ := os.ReadFile(filepath.Join(n.Dir, "node.log"))
		t.Logf("%s delivered %d, deferred %d waiting for the provider", n.Name,
			strings.Count(string(b), `"status":"delivered"`), strings.Count(string(b), `"reply":"waiting for the provider's limits`))
	}
}

// checkShapingLimits checks the concurrency and the pace the MX saw.
func checkShapingLimits(t *testing.T, mx *relaytest.MeasureMX, arr []relaytest.Arrival) {
	t.Helper()
	most, total := mx.Peak()
	t.Logf("%d connections in all, at most %d at once (limit %d)", total, most, shapeConns)
	if most > shapeConns {
		t.Errorf("%d connections open at once, limit %d", most, shapeConns)
	}
	rate := shaping.Rate{Count: 600, Per: time.Minute} // shapeRate
	if len(arr) > 1 {
		var gap time.Duration
		for i := 1; i < len(arr); i++ {
			gap = max(gap, arr[i].At.Sub(arr[i-1].At))
		}
		t.Logf("%d arrivals over %s, longest gap %s", len(arr), arr[len(arr)-1].At.Sub(arr[0].At).Round(time.Millisecond),
			gap.Round(time.Millisecond))
	}
	for _, w := range []time.Duration{time.Second, 3 * time.Second, 10 * time.Second} {
		limit := int(int64(rate.Count)*int64(w)/int64(rate.Per)) + rate.Burst()
		n := relaytest.MaxInWindow(arr, w)
		t.Logf("at most %d arrivals within %s (limit %d: %s plus a burst of %d)", n, w, limit, shapeRate, rate.Burst())
		if n > limit {
			t.Errorf("%d arrivals within %s, limit %d", n, w, limit)
		}
	}
}

// checkShapingStatus runs `jetrelay shaping status --json` against n.
func checkShapingStatus(t *testing.T, bin string, n *Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "shaping", "status", "--json", "--config", n.ConfigPath)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("shaping status: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	var st struct {
		Providers []struct {
			Name  string  `json:"name"`
			Rate  float64 `json:"rate"`
			Limit struct {
				Connections int    `json:"connections"`
				Rate        string `json:"rate"`
			} `json:"limit"`
		} `json:"providers"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &st); err != nil {
		t.Fatalf("shaping status --json: %v\n%s", err, stdout.String())
	}
	t.Logf("shaping status: %s", bytes.TrimSpace(stdout.Bytes()))
	for _, p := range st.Providers {
		if p.Name == "prov" {
			if p.Limit.Connections != shapeConns || p.Limit.Rate != shapeRate || p.Rate <= 0 {
				t.Errorf("provider prov: limit %+v, rate over the last minute %v; want %d, %s and > 0",
					p.Limit, p.Rate, shapeConns, shapeRate)
			}
			return
		}
	}
	t.Errorf("shaping status lists no provider prov:\n%s", stdout.String())
}

// startShapingNodes starts two relays: relay-a with its embedded NATS on
// a client port, relay-b on that NATS by nats.url (user jetrelay and
// relay-a's data_dir/nats.password); it returns once both are ready.
func startShapingNodes(t *testing.T, bin, dnsAddr, mxAddr string) []*Node {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte(shapePass), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	_, mxPort := splitAddr(mxAddr)
	dir, ports := t.TempDir(), portPicker{}
	var nodes []*Node
	for _, name := range nodeNames[:2] {
		n := &Node{Name: name, Dir: filepath.Join(dir, name), bin: bin, SubmitAddr: ports.addr(), AdminAddr: ports.addr()}
		n.ConfigPath = filepath.Join(n.Dir, "jetrelay.yaml")
		if err := os.MkdirAll(filepath.Join(n.Dir, "data"), 0o700); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	nodes[0].ClientAddr = ports.addr()
	natsBlocks := []string{
		fmt.Sprintf("nats: {listen: %q, replicas: 1}\n", nodes[0].ClientAddr),
		fmt.Sprintf("nats: {url: %q, user: %s, password_file: %q, replicas: 1}\n", "nats://"+nodes[0].ClientAddr,
			queue.EmbeddedUser, filepath.Join(nodes[0].Dir, "data", queue.PasswordFileName)),
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			_ = n.Kill()
			if t.Failed() {
				t.Logf("--- %s log (tail):\n%s", n.Name, n.LogTail(6000))
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i, n := range nodes {
		conf := shapingConfig(n, natsBlocks[i], string(hash), dnsAddr, mxPort)
		if err := os.WriteFile(n.ConfigPath, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := n.Start(); err != nil {
			t.Fatal(err)
		}
		// relay-b needs relay-a's NATS and password file: one at a time.
		if err := (&Cluster{Nodes: nodes}).WaitReady(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	return nodes
}

// The submission user of the shaping test.
const (
	shapeUser = "shaper"
	shapePass = "shaper-pass-1"
)

// shapingConfig is one node's jetrelay.yaml: MX delivery through the fake
// DNS to the fake MX's port, loopback allowed, provider "prov" limited.
func shapingConfig(n *Node, natsBlock, hash, dnsAddr, mxPort string) string {
	return fmt.Sprintf(`hostname: %s.shaping.test
data_dir: %q
%ssubmission:
  listeners: [{addr: %q, tls: starttls}]
  users: [{name: %s, password_hash: %q, allowed_from: [example.com]}]
delivery:
  port: %s
  dns: {servers: [%q], timeout: 5s}
  allowed_networks: [127.0.0.0/8]
  shaping:
    include: ""
    providers:
      - {name: prov, mx: [".prov.test"], connections: %d, rate: %s}
admin: {listen: %q}
log: {level: info}
`, n.Name, filepath.Join(n.Dir, "data"), natsBlock, n.SubmitAddr, shapeUser, hash,
		mxPort, dnsAddr, shapeConns, shapeRate, n.AdminAddr)
}

// submitSplit submits shapeMessages messages, half through each node (two
// connections per node at once), to the three domains in turn, and
// returns their Message-IDs; every reply must be 250.
func submitSplit(t *testing.T, nodes []*Node) []string {
	t.Helper()
	const conns = 4
	ids := make([][]string, conns)
	errs := make(chan error, conns)
	var wg sync.WaitGroup
	for c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- submitSome(nodes[c%len(nodes)], c, shapeMessages/conns+boolInt(c < shapeMessages%conns), &ids[c])
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	var all []string
	for _, l := range ids {
		all = append(all, l...)
	}
	if len(all) != shapeMessages {
		t.Fatalf("%d messages submitted, want %d", len(all), shapeMessages)
	}
	return all
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// submitSome sends n messages on one authenticated session to n,
// appending each accepted one's Message-ID to ids.
func submitSome(n *Node, c, count int, ids *[]string) error {
	cl, err := dial(n.SubmitAddr, shapeUser, shapePass)
	if err != nil {
		return fmt.Errorf("%s: %w", n.Name, err)
	}
	defer cl.Close()
	for i := range count {
		id := fmt.Sprintf("shape-%d-%d@example.com", c, i)
		rcpt := fmt.Sprintf("u%d-%d@d%d.test", c, i, (c+i)%3+1)
		if err := cl.Mail("sender@example.com", nil); err != nil {
			return fmt.Errorf("%s MAIL: %w", n.Name, err)
		}
		if err := cl.Rcpt(rcpt, nil); err != nil {
			return fmt.Errorf("%s RCPT %s: %w", n.Name, rcpt, err)
		}
		w, err := cl.Data()
		if err != nil {
			return fmt.Errorf("%s DATA: %w", n.Name, err)
		}
		if _, err := w.Write(message(id)); err != nil {
			return fmt.Errorf("%s DATA: %w", n.Name, err)
		}
		if err := w.Close(); err != nil { // any reply but 250 is an error
			return fmt.Errorf("%s end of data: %w", n.Name, err)
		}
		*ids = append(*ids, id)
	}
	return cl.Quit()
}
