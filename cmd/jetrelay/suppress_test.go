package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/bounce"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/outcome"
	"github.com/jetrelay/jetrelay/relay/relaytest"
	"github.com/rs/zerolog"
)

// hardBounce has the server side (a Bouncer on the same NATS) suppress
// addr after a 550 5.1.1, as delivery would.
func hardBounce(t *testing.T, o *opsEnv, addr string) *bounce.Bouncer {
	t.Helper()
	cfg := config.Default()
	cfg.Hostname, cfg.DataDir = "relay.test", o.dataDir
	ctx := context.Background()
	b, err := bounce.New(ctx, bounce.Options{
		Settings: bounceSettings(cfg), Queue: o.q, Events: o.em, Logger: zerolog.New(zerolog.NewTestWriter(t)),
	})
	if err != nil {
		t.Fatal(err)
	}
	env := &queue.Envelope{ID: queue.NewID(), From: "app@example.com", Domain: "example.org", Arrival: time.Now(),
		Rcpts: []queue.Recipient{{Addr: addr}}}
	res := []bounce.Result{{Rcpt: env.Rcpts[0], Status: outcome.Failed,
		Reply: outcome.Reply{Code: 550, Enh: "5.1.1", Text: "5.1.1 user unknown"}, MX: "mx.example.org", Time: time.Now()}}
	if err := b.Failed(ctx, env, []byte("Subject: hi\r\n\r\nhi\r\n"), res); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := b.Suppressed(ctx, addr); !ok || err != nil {
		t.Fatalf("hard bounce did not suppress %s: %v", addr, err)
	}
	return b
}

// TestSuppressCLI: ls shows a hard-bounced address, rm lifts it (and the
// change is in the events stream with the operator as actor), add and
// ls --json round-trip, and mistakes exit non-zero.
func TestSuppressCLI(t *testing.T) {
	t.Parallel()
	o := newOpsEnv(t)
	b := hardBounce(t, o, "Bob@Example.org")
	ctx := context.Background()

	rc, out, errOut := runOps(t, suppressMain, append([]string{"ls"}, o.args()...)...)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if rc != 0 || len(lines) != 2 || !strings.HasPrefix(lines[0], "ADDRESS") ||
		!strings.HasPrefix(lines[1], "bob@example.org ") || !strings.Contains(lines[1], "550 5.1.1 user unknown") {
		t.Fatalf("ls: rc %d\n%s%s", rc, out, errOut)
	}
	if strings.Index(lines[0], "SINCE") != strings.Index(lines[1], time.Now().UTC().Format("2006-")) {
		t.Errorf("columns not aligned:\n%s", out)
	}

	rc, out, errOut = runOps(t, suppressMain, append([]string{"rm", "bob@example.org"}, o.args()...)...)
	if rc != 0 || !strings.Contains(out, "unsuppressed bob@example.org") {
		t.Fatalf("rm: rc %d %s%s", rc, out, errOut)
	}
	if _, ok, _ := b.Suppressed(ctx, "bob@example.org"); ok {
		t.Error("still suppressed after suppress rm")
	}
	un := waitEvent(t, o, events.Unsuppressed, "bob@example.org")
	if !strings.HasPrefix(un.Actor, "cli:") {
		t.Errorf("unsuppressed event actor %q, want cli:…", un.Actor)
	}

	addArgs := append(append([]string{"add"}, o.args()...), "carol@example.org", "--reason", "asked to stop")
	rc, _, errOut = runOps(t, suppressMain, addArgs...)
	if rc != 0 {
		t.Fatalf("add: rc %d %s", rc, errOut)
	}
	if _, ok, _ := b.Suppressed(ctx, "carol@example.org"); !ok {
		t.Error("add did not suppress")
	}
	rc, out, _ = runOps(t, suppressMain, append([]string{"list", "--json"}, o.args()...)...)
	var s bounce.Suppression
	if rc != 0 || json.Unmarshal([]byte(out), &s) != nil || s.Addr != "carol@example.org" || s.Reason != "asked to stop" ||
		!s.Expires.Equal(s.Since.Add(720*time.Hour)) {
		t.Errorf("ls --json: rc %d %q → %+v", rc, out, s)
	}

	for _, bad := range []struct {
		args []string
		rc   int
	}{
		{append([]string{"rm", "nobody@example.org"}, o.args()...), 1},
		{[]string{"add"}, 2}, {[]string{"ls", "extra"}, 2}, {[]string{"frobnicate"}, 2}, {nil, 2}, {[]string{"--help"}, 0},
	} {
		if rc, _, _ := runOps(t, suppressMain, bad.args...); rc != bad.rc {
			t.Errorf("suppress %v: rc %d, want %d", bad.args, rc, bad.rc)
		}
	}
}

// waitEvent polls the events stream for an event of kind about rcpt.
func waitEvent(t *testing.T, o *opsEnv, kind, rcpt string) events.Event {
	t.Helper()
	var found *events.Event
	relaytest.Eventually(t, kind+" event stored", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = events.Tail(ctx, o.q.JetStream(), events.Filter{Rcpt: rcpt, Status: kind}, func(r events.Record) error {
			found = r.Event
			return nil
		})
		return found != nil
	})
	return *found
}
