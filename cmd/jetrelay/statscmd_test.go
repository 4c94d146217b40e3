package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/guard"
	"github.com/jetrelay/jetrelay/relay/relaytest"
	"github.com/jetrelay/jetrelay/relay/stats"
	"github.com/rs/zerolog"
)

// statsArgs are o.args with the NATS user as --nats-user (stats' --user
// is the submission user).
func statsArgs(o *opsEnv, rest ...string) []string {
	return append([]string{"--config", o.cfgPath, "--nats", o.q.ClientURL(), "--nats-user", queue.EmbeddedUser,
		"--password-file", filepath.Join(o.dataDir, queue.PasswordFileName)}, rest...)
}

// TestStatsAndUserResume: a relay's aggregator and guard count shop's
// outcomes and pause it; `stats` prints the counts per user and domain
// with the pause, as text and JSON; `user resume` lifts it once.
func TestStatsAndUserResume(t *testing.T) {
	o := newOpsEnv(t)
	yaml := "hostname: relay.test\ndata_dir: " + o.dataDir + "\nsubmission:\n  users:\n" +
		"    - {name: shop, password_hash: \"$2a$10$Xbd3IkIjXcBBZD6GR3dDgea.fil8qX8529caIPtVQsKA5uq.N2g7m\", " +
		"allowed_from: [example.com], bounce_guard: {pause: 10%, min_volume: 5}}\n"
	if err := os.WriteFile(o.cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(o.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	g := startTestStats(t, o, cfg)
	evs := []*events.Event{{Event: events.Accepted, User: "shop", QueueID: "Q1", RcptCount: 5}}
	for i, r := range []string{"a@gmail.com", "b@gmail.com", "c@gmail.com", "d@example.org", "e@example.org"} {
		st, code := events.StatusDelivered, 250
		if i >= 3 {
			st, code = events.StatusFailed, 550
		}
		evs = append(evs, &events.Event{Event: events.Delivery, User: "shop", QueueID: "Q1", Rcpt: r,
			Domain: r[2:], Status: st, SMTPCode: code})
	}
	for _, e := range evs {
		o.em.Emit(e)
	}
	relaytest.Eventually(t, "shop paused", func() bool { _, p := g.Paused("shop"); return p })

	rc, out, errOut := runOps(t, statsMain, statsArgs(o, "--user", "shop")...)
	if rc != 0 {
		t.Fatalf("stats: rc %d: %s", rc, errOut)
	}
	for _, want := range []string{"shop  5         3          0         2        0           0           40.0%",
		"paused: bounce rate 40.0% over 24h", "shop  example.org  -         0          0         2",
		"shop  gmail.com    -         3"} {
		if !strings.Contains(out, want) {
			t.Errorf("stats output lacks %q:\n%s", want, out)
		}
	}
	rc, out, errOut = runOps(t, statsMain, statsArgs(o, "--json", "--since", "2h")...)
	var rep statsReport
	if rc != 0 || json.Unmarshal([]byte(out), &rep) != nil {
		t.Fatalf("stats --json: rc %d: %s%s", rc, errOut, out)
	}
	if len(rep.Users) != 1 || rep.Users[0].Bounced != 2 || !rep.Users[0].Paused || rep.Users[0].BounceRate != 0.4 ||
		len(rep.Domains) != 2 || rep.Domains[0].Domain != "gmail.com" {
		t.Errorf("stats --json: %+v", rep)
	}

	rc, out, errOut = runOps(t, userResumeMain, o.args("shop")...)
	if rc != 0 || !strings.Contains(out, "resumed shop") {
		t.Fatalf("user resume: rc %d: %s%s", rc, out, errOut)
	}
	relaytest.Eventually(t, "shop resumed", func() bool { _, p := g.Paused("shop"); return !p })
	if rc, out, _ = runOps(t, userResumeMain, o.args("shop")...); rc != 0 || !strings.Contains(out, "not paused") {
		t.Errorf("second resume: rc %d: %s", rc, out)
	}
	if rc, _, errOut = runOps(t, userResumeMain, o.args("nobody")...); rc != 1 || !strings.Contains(errOut, "no user") {
		t.Errorf("unknown user: rc %d: %s", rc, errOut)
	}
}

// startTestStats runs an aggregator and a guard on o's NATS with cfg's
// rules, as serve does (statswire.go).
func startTestStats(t *testing.T, o *opsEnv, cfg *config.Config) *guard.Guard {
	t.Helper()
	log := zerolog.New(zerolog.NewTestWriter(t))
	var g *guard.Guard
	st, err := stats.Open(context.Background(), o.q.JetStream(), stats.Options{Interval: 20 * time.Millisecond,
		Log: log, AfterFlush: func(ctx context.Context, users []string) { g.Evaluate(ctx, users) }})
	if err != nil {
		t.Fatal(err)
	}
	g, err = guard.Open(context.Background(), guard.Options{JetStream: o.q.JetStream(), Stats: st, Events: o.em, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	g.SetRules(guardRules(cfg))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = st.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait(); g.Close() })
	return g
}
