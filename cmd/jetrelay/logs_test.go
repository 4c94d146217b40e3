package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/relaytest"
	"github.com/rs/zerolog"
)

// opsEnv is an embedded JetStream with a loopback client port, the events
// stream, and the flags an ops command needs to reach it.
type opsEnv struct {
	q       *queue.Queue
	dataDir string
	cfgPath string
	pub     *events.StreamPublisher
	em      *events.Emitter
}

func newOpsEnv(t *testing.T) *opsEnv {
	t.Helper()
	dir := t.TempDir()
	q := queuetest.RunJetStream(t, queuetest.Options{DataDir: dir, Listen: "127.0.0.1:0"})
	pub, err := events.NewPublisher(events.PublisherOptions{Conn: q.Conn(), Logger: zerolog.New(zerolog.NewTestWriter(t)),
		Stream: events.StreamOptions{MaxAge: time.Hour, Replicas: 1}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := pub.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pub.Close(context.Background()) })
	cfg := filepath.Join(dir, "jetrelay.yaml")
	yaml := "hostname: relay.test\ndata_dir: " + dir + "\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return &opsEnv{q: q, dataDir: dir, cfgPath: cfg, pub: pub, em: events.NewEmitter(zerolog.Nop(), pub)}
}

// args prefixes the flags that reach this env's NATS.
func (o *opsEnv) args(rest ...string) []string {
	return append([]string{"--config", o.cfgPath, "--nats", o.q.ClientURL(), "--user", queue.EmbeddedUser,
		"--password-file", filepath.Join(o.dataDir, queue.PasswordFileName)}, rest...)
}

// runOps runs an ops command main with args and returns the exit code and both streams.
func runOps(t *testing.T, main func(context.Context, []string, stdio) int, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rc := main(ctx, args, stdio{in: strings.NewReader(""), out: &out, err: &errb})
	return rc, out.String(), errb.String()
}

// history emits a message's life with another message's events between.
func history(o *opsEnv, id, other string) []string {
	base := time.Now().Add(-time.Minute).UTC()
	next := base.Add(5 * time.Minute)
	evs := []*events.Event{
		{Event: events.Accepted, QueueID: id, MailFrom: events.Str("app@example.com"), RcptCount: 1, Size: 100},
		{Event: events.Accepted, QueueID: other, MailFrom: events.Str("x@example.com"), RcptCount: 1},
		{Event: events.Delivery, QueueID: id, Rcpt: "u@example.net", Domain: "example.net", MX: "mx.example.net",
			Attempt: 1, Status: events.StatusDeferred, SMTPCode: 451, SMTPEnh: "4.7.1", Reply: "try later",
			NextAttempt: &next, Arrival: base},
		{Event: events.Delivery, QueueID: other, Rcpt: "v@example.org", Status: events.StatusDelivered, SMTPCode: 250},
		{Event: events.Delivery, QueueID: id, Rcpt: "u@example.net", Domain: "example.net", MX: "mx.example.net",
			Attempt: 2, Status: events.StatusFailed, SMTPCode: 550, SMTPEnh: "5.1.1", Reply: "no such user", Arrival: base},
		{Event: events.DSN, QueueID: id, DSNID: "01JDSNDSNDSNDSNDSNDSND", Rcpt: "app@example.com", Status: "queued"},
	}
	for i, e := range evs {
		e.Time = base.Add(time.Duration(i) * time.Second)
		o.em.Emit(e)
	}
	return []string{events.Accepted, events.StatusDeferred, events.StatusFailed, events.DSN}
}

// waitStored polls until the events stream holds n events.
func waitStored(t *testing.T, o *opsEnv, n uint64) {
	t.Helper()
	s, err := o.q.JetStream().Stream(context.Background(), events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	relaytest.Eventually(t, "events stored", func() bool {
		info, err := s.Info(context.Background())
		return err == nil && info.State.Msgs >= n
	})
}

func TestLogsJSONHistoryInOrder(t *testing.T) {
	t.Parallel()
	o := newOpsEnv(t)
	id, other := queue.NewID(), queue.NewID()
	want := history(o, id, other)
	waitStored(t, o, 6)
	rc, out, errOut := runOps(t, logsMain, o.args("--json", "--id", id)...)
	if rc != 0 {
		t.Fatalf("rc %d: %s", rc, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), out)
	}
	for i, l := range lines {
		var e events.Event
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("line %d not JSON: %v", i, err)
		}
		if e.QueueID != id || statusOf(&e) != want[i] {
			t.Errorf("line %d: %s %s, want %s", i, e.QueueID, statusOf(&e), want[i])
		}
	}
}

func TestLogsTextFiltersAndPlainOutput(t *testing.T) {
	t.Parallel()
	o := newOpsEnv(t)
	id, other := queue.NewID(), queue.NewID()
	history(o, id, other)
	waitStored(t, o, 6)
	rc, out, errOut := runOps(t, logsMain, o.args("--status", "failed", "--since", "1h")...)
	if rc != 0 {
		t.Fatalf("rc %d: %s", rc, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 1 || strings.Contains(out, "\x1b[") {
		t.Fatalf("want one plain line, got:\n%q", out)
	}
	for _, f := range []string{id, "failed", "u@example.net", "mx.example.net", "550 5.1.1", "no such user"} {
		if !strings.Contains(lines[0], f) {
			t.Errorf("line lacks %q: %s", f, lines[0])
		}
	}
	rc, out, _ = runOps(t, logsMain, o.args("--from", "x@example.com")...)
	if rc != 0 || strings.Count(out, other) != 2 || strings.Contains(out, id) {
		t.Fatalf("--from: rc %d\n%s", rc, out)
	}
	if rc, _, _ := runOps(t, logsMain, o.args("--id", "nope")...); rc != 2 {
		t.Fatalf("bad --id: rc %d", rc)
	}
}

func TestLogsFollowShowsLaterDelivery(t *testing.T) {
	t.Parallel()
	o := newOpsEnv(t)
	first, later := queue.NewID(), queue.NewID()
	o.em.Emit(&events.Event{Event: events.Accepted, QueueID: first})
	var out, errb syncBuffer // bench_test.go
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	go func() { done <- logsMain(ctx, o.args("-f"), stdio{out: &out, err: &errb}) }()
	relaytest.Eventually(t, "follow caught up", func() bool {
		return strings.Contains(out.String(), first)
	})
	o.em.Emit(&events.Event{Event: events.Delivery, QueueID: later, Rcpt: "r@example.net", Status: events.StatusDelivered,
		SMTPCode: 250, SMTPEnh: "2.0.0", MX: "mx.example.net"})
	relaytest.Eventually(t, "later delivery printed", func() bool {
		return strings.Contains(out.String(), later) && strings.Contains(out.String(), "delivered")
	})
	cancel()
	select {
	case rc := <-done:
		if rc != 0 {
			t.Fatalf("logs -f rc %d: %s", rc, errb.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("logs -f did not stop on cancel")
	}
}
