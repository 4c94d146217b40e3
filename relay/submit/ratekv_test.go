package submit

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// openTestRates opens the rate limiter (local only without o.JetStream).
func openTestRates(t testing.TB, o RateOptions) *Rates {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	r, err := OpenRates(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// listeningJetStream runs a JetStream with a client port, for secondConn.
func listeningJetStream(t testing.TB) (*queue.Queue, string) {
	t.Helper()
	dir := t.TempDir()
	return queuetest.RunJetStream(t, queuetest.Options{DataDir: dir, Listen: "127.0.0.1:0"}), dir
}

// secondConn is another NATS connection (another node's) to q's server.
func secondConn(t testing.TB, q *queue.Queue, dir string) jetstream.JetStream {
	t.Helper()
	pass, err := os.ReadFile(filepath.Join(dir, queue.PasswordFileName))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(q.ClientURL(), nats.UserInfo(queue.EmbeddedUser, strings.TrimSpace(string(pass))),
		nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func mustRate(t testing.TB, s string) config.Rate {
	t.Helper()
	r, err := config.ParseRate(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// midWindow is a clock 15 s into a minute window.
func midWindow() *testClock {
	return newClock(time.Now().Truncate(time.Minute).Add(15 * time.Second))
}

// allowN asks lim n times and counts the tokens granted.
func allowN(lims []*userLimit, n int) int {
	got := 0
	for i := range n {
		if lims[i%len(lims)].Allow() {
			got++
		}
	}
	return got
}

// bucketWrites is how many writes the rate bucket has taken.
func bucketWrites(t testing.TB, js jetstream.JetStream) uint64 {
	t.Helper()
	st, err := js.Stream(t.Context(), "KV_"+RateBucket)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}

// TestRateClusterWide: two nodes (two limiters on two connections to one
// JetStream) together lease at most N tokens in a window; leases left
// unused stay small; the next window weights the previous one (sliding
// estimate), and a window after an idle one has the full budget again.
func TestRateClusterWide(t *testing.T) {
	t.Parallel()
	q, dir := listeningJetStream(t)
	clk := midWindow()
	log := zerolog.New(zerolog.NewTestWriter(t))
	a := openTestRates(t, RateOptions{JetStream: q.JetStream(), Now: clk.now, Logger: log})
	b := openTestRates(t, RateOptions{JetStream: secondConn(t, q, dir), Now: clk.now, Logger: log})
	rt := mustRate(t, "60/m")
	lims := []*userLimit{a.limiter(slowUser, rt), b.limiter(slowUser, rt)}
	// Block size max(1, 60/20) = 3: at most 3 tokens per node unused.
	if got := allowN(lims, 100); got > 60 || got < 60-2*3 {
		t.Fatalf("two nodes granted %d of 100 in one window at 60/m; want 54..60", got)
	}
	clk.add(time.Minute + 15*time.Second) // next window, half gone: prev weighs 30
	if got := allowN(lims, 100); got > 30 || got < 30-2*3 {
		t.Fatalf("granted %d halfway through the next window; want 24..30 (60 - 60·½)", got)
	}
	clk.add(2 * time.Minute) // a window with no traffic in between
	if got := allowN(lims, 100); got > 60 || got < 54 {
		t.Fatalf("granted %d after an idle window; want 54..60", got)
	}
}

// TestRateOffMessagePath: N messages cost about N/block bucket writes
// (block = limit/20), and a refused message costs none until the budget
// can have room again.
func TestRateOffMessagePath(t *testing.T) {
	t.Parallel()
	q := queuetest.RunJetStream(t)
	clk := midWindow()
	r := openTestRates(t, RateOptions{JetStream: q.JetStream(), Now: clk.now, Logger: zerolog.New(zerolog.NewTestWriter(t))})
	lim := r.limiter(appUser, mustRate(t, "600/m"))
	before := bucketWrites(t, q.JetStream())
	if got := allowN([]*userLimit{lim}, 300); got != 300 {
		t.Fatalf("granted %d of 300 at 600/m", got)
	}
	writes := bucketWrites(t, q.JetStream()) - before
	t.Logf("300 messages at 600/m: %d bucket writes (%.3f per message)", writes, float64(writes)/300)
	if writes > 300/30+1 {
		t.Fatalf("300 messages cost %d bucket writes; want about 300/30 = 10", writes)
	}
	allowN([]*userLimit{lim}, 400) // spend the window's budget
	spent := bucketWrites(t, q.JetStream())
	if got := allowN([]*userLimit{lim}, 100); got != 0 {
		t.Fatalf("granted %d over the budget", got)
	}
	if w := bucketWrites(t, q.JetStream()); w != spent {
		t.Fatalf("refusals wrote %d times to the bucket", w-spent)
	}
}

// TestRateFailOpen: when the bucket stops answering, a node limits locally
// at the configured rate instead of refusing, and logs rate_kv_unavailable
// once.
func TestRateFailOpen(t *testing.T) {
	t.Parallel()
	q, dir := listeningJetStream(t)
	logs := &logBuffer{}
	clk := midWindow()
	r := openTestRates(t, RateOptions{JetStream: secondConn(t, q, dir), Now: clk.now, Logger: zerolog.New(logs)})
	lim := r.limiter(slowUser, mustRate(t, "5/m"))
	if !lim.Allow() {
		t.Fatal("first message refused")
	}
	q.Embedded().Shutdown() // the node's NATS is gone: requests wait for their timeout
	q.Embedded().WaitForShutdown()
	if got := allowN([]*userLimit{lim}, 10); got != 5 {
		t.Fatalf("with the bucket gone: %d of 10 granted; want the local 5/m bucket's 5", got)
	}
	if n := len(logs.events("rate_kv_unavailable")); n != 1 {
		t.Fatalf("%d rate_kv_unavailable lines; want 1:\n%s", n, logs.String())
	}
}

// withRate sets slowUser's rate.
func withRate(s string) func(*config.Config) {
	return func(c *config.Config) {
		for i := range c.Submission.Users {
			if c.Submission.Users[i].Name == slowUser {
				c.Submission.Users[i].Rate, _ = config.ParseRate(s)
			}
		}
	}
}

// mailFroms sends n MAIL FROM commands round the clients (RSET after each
// accepted one) and counts the 250s; every other reply must be the rate's
// 451 4.7.1.
func mailFroms(t *testing.T, clients []*rawClient, n int) int {
	t.Helper()
	accepted := 0
	for i := range n {
		c := clients[i%len(clients)]
		switch r := c.cmd("MAIL FROM:<a@example.com>"); {
		case r.Code == 250:
			accepted++
			c.expect("RSET", 250, "")
		case r.Code != 451 || r.Enh != "4.7.1":
			t.Fatalf("MAIL FROM %d: %v, want 250 or the rate's 451 4.7.1", i, r)
		}
	}
	return accepted
}

// TestRateAcrossTwoServers: the case. A user with rate 60/m
// sending through two submission servers (two nodes: own limiters, own
// NATS connections, one JetStream) gets at most 60 accepted in the
// window; the rest are answered 451 4.7.1.
func TestRateAcrossTwoServers(t *testing.T) {
	t.Parallel()
	q, dir := listeningJetStream(t)
	clk := midWindow()
	h1 := start(t, testConfig(t, withRate("60/m")), harnessOpts{queue: q, rateClock: clk})
	h2 := start(t, testConfig(t, withRate("60/m")), harnessOpts{queue: q, rateClock: clk, nodeJS: secondConn(t, q, dir)})
	clients := []*rawClient{h1.login(lnImplicit, slowUser, slowPass), h2.login(lnImplicit, slowUser, slowPass)}
	accepted := mailFroms(t, clients, 100)
	t.Logf("60/m through two servers: %d of 100 accepted", accepted)
	if accepted > 60 || accepted < 60-2*3 {
		t.Fatalf("%d of 100 accepted through two servers at 60/m; want 54..60 (at most one block of 3 unused per node)",
			accepted)
	}
	if n := len(h1.logs.events("rejected")) + len(h2.logs.events("rejected")); n != 100-accepted {
		t.Fatalf("%d rejected log lines for %d refusals", n, 100-accepted)
	}
}

// TestRateReload: a reload that keeps the rate neither refills nor drains
// the budget; a raised rate applies from the next message.
func TestRateReload(t *testing.T) {
	t.Parallel()
	h := start(t, testConfig(t), harnessOpts{rateClock: midWindow()}) // slowUser: 2/h
	c := h.login(lnImplicit, slowUser, slowPass)
	if got := mailFroms(t, []*rawClient{c}, 3); got != 2 {
		t.Fatalf("%d of 3 accepted at 2/h", got)
	}
	reload(t, h.srv, testConfig(t))
	if got := mailFroms(t, []*rawClient{c}, 1); got != 0 {
		t.Fatal("a reload with the same rate refilled the budget")
	}
	reload(t, h.srv, testConfig(t, withRate("5/h")))
	if got := mailFroms(t, []*rawClient{c}, 5); got != 3 {
		t.Fatalf("%d of 5 accepted after raising 2/h to 5/h with 2 spent; want 3", got)
	}
}

// TestRateConcurrent: sessions on two nodes asking at once (CAS races)
// still lease at most N in the window.
func TestRateConcurrent(t *testing.T) {
	t.Parallel()
	q, dir := listeningJetStream(t)
	clk := midWindow()
	log := zerolog.New(zerolog.NewTestWriter(t))
	a := openTestRates(t, RateOptions{JetStream: q.JetStream(), Now: clk.now, Logger: log})
	b := openTestRates(t, RateOptions{JetStream: secondConn(t, q, dir), Now: clk.now, Logger: log})
	rt := mustRate(t, "200/m") // block 10
	var granted atomic.Int64
	var wg sync.WaitGroup
	for _, r := range []*Rates{a, b} {
		for range 4 {
			wg.Go(func() {
				lim := r.limiter(slowUser, rt)
				for range 60 {
					if lim.Allow() {
						granted.Add(1)
					}
				}
			})
		}
	}
	wg.Wait()
	if g := granted.Load(); g > 200 || g < 200-2*10 {
		t.Fatalf("8 sessions on two nodes were granted %d of 480 at 200/m; want 180..200", g)
	}
	if a.down() || b.down() {
		t.Fatal("contention was taken for an unavailable bucket")
	}
}

// TestRateBucketBack: a node that fell back to local limits uses the
// bucket again once it answers.
func TestRateBucketBack(t *testing.T) {
	t.Parallel()
	q := queuetest.RunJetStream(t)
	clk := midWindow()
	r := openTestRates(t, RateOptions{JetStream: q.JetStream(), Now: clk.now, Logger: zerolog.New(zerolog.NewTestWriter(t))})
	r.retryAfter = 0
	lim := r.limiter(slowUser, mustRate(t, "100/m")) // block 5
	if err := q.JetStream().DeleteKeyValue(t.Context(), RateBucket); err != nil {
		t.Fatal(err)
	}
	if !lim.Allow() || lim.st.local == nil {
		t.Fatal("with the bucket gone the message was not granted by the local limiter")
	}
	openTestRates(t, RateOptions{JetStream: q.JetStream()}) // the bucket again
	if !lim.Allow() {
		t.Fatal("refused with the bucket back")
	}
	n, _, err := r.count(t.Context(), windowKey(userHash(slowUser), time.Minute, windowOf(clk.now(), time.Minute)))
	if err != nil || n != 5 {
		t.Fatalf("window count %d (%v) after the bucket came back; want one block of 5", n, err)
	}
}

// TestRefillAt: when a spent budget can have room again.
func TestRefillAt(t *testing.T) {
	start := time.Unix(600, 0)
	rt := mustRate(t, "60/m")
	for _, tc := range []struct {
		name      string
		prev, cur int
		want      time.Duration // after start
	}{
		{"no previous window: the next window", 0, 60, time.Minute},
		{"current window full: the next window", 30, 60, time.Minute},
		{"previous weight must fall to 29", 60, 30, 31 * time.Second},
		{"previous weight must fall to 0", 60, 59, time.Minute},
		{"room already", 10, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := refillAt(rt, start, tc.prev, tc.cur).Sub(start); got != tc.want {
				t.Fatalf("refillAt(prev %d, cur %d) = start+%v, want start+%v", tc.prev, tc.cur, got, tc.want)
			}
		})
	}
}
