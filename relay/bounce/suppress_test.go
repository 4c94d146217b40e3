package bounce

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/nats-io/nats.go/jetstream"
)

func TestSuppressionList(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil) // suppress_for 720h
	l := f.b.Suppressions()
	ctx := context.Background()
	s, err := l.Add(ctx, Suppression{
		Addr: " <Bob@Example.ORG> ", Reason: "550 5.1.1 user unknown", Code: "5.1.1", QueueID: "Q1",
	}, "cli:alice")
	if err != nil {
		t.Fatal(err)
	}
	want := Suppression{Addr: "bob@example.org", Since: t0, Reason: "550 5.1.1 user unknown", Code: "5.1.1",
		QueueID: "Q1", Expires: t0.Add(720 * time.Hour)}
	if diff := cmp.Diff(want, s); diff != "" {
		t.Errorf("Add (-want +got):\n%s", diff)
	}
	f.now = t0.Add(time.Hour)
	if _, err := l.Add(ctx, Suppression{Addr: "carol@example.org"}, "cli:alice"); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"bob@example.org", "BOB@EXAMPLE.ORG", "<bob@example.org>"} {
		if since, ok, err := l.Suppressed(ctx, a); !ok || err != nil || !since.Equal(t0) {
			t.Errorf("Suppressed(%q) = %v, %v, %v", a, since, ok, err)
		}
	}
	list, err := l.List(ctx)
	if err != nil || len(list) != 2 || list[0].Addr != "bob@example.org" || list[1].Addr != "carol@example.org" {
		t.Fatalf("List = %+v, %v", list, err)
	}
	found, err := l.Remove(ctx, "BOB@example.org", "cli:alice")
	if err != nil || !found {
		t.Fatalf("Remove = %v, %v", found, err)
	}
	if found, _ := l.Remove(ctx, "nobody@example.org", "cli:alice"); found {
		t.Error("removed an address that was not listed")
	}
	if _, ok, _ := l.Suppressed(ctx, "bob@example.org"); ok {
		t.Error("still suppressed after Remove")
	}
	var kinds []string
	for _, e := range f.rec.All() {
		if e.Actor != "cli:alice" || e.Rcpt == "" {
			t.Errorf("event without actor or rcpt: %+v", e)
		}
		kinds = append(kinds, e.Event)
	}
	if diff := cmp.Diff([]string{events.Suppressed, events.Suppressed, events.Unsuppressed}, kinds); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
}

func TestSuppressionExpiry(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	l := f.b.Suppressions()
	ctx := context.Background()
	if _, err := l.Add(ctx, Suppression{Addr: "bob@example.org"}, ActorIntake); err != nil {
		t.Fatal(err)
	}
	f.now = t0.Add(720*time.Hour - time.Second)
	if _, ok, _ := l.Suppressed(ctx, "bob@example.org"); !ok {
		t.Error("expired early")
	}
	f.now = t0.Add(720 * time.Hour)
	if _, ok, _ := l.Suppressed(ctx, "bob@example.org"); ok {
		t.Error("still suppressed at since + suppress_for")
	}
	if list, _ := l.List(ctx); len(list) != 0 {
		t.Errorf("expired entry listed: %+v", list)
	}
}

func TestSuppressionBadInput(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	l := f.b.Suppressions()
	ctx := context.Background()
	for _, a := range []string{"", "nobody", "@example.org", "a b@example.org", "x@", "a\r\n@b.c"} {
		if _, err := l.Add(ctx, Suppression{Addr: a}, "test"); err == nil {
			t.Errorf("Add(%q) accepted", a)
		}
		if _, ok, err := l.Suppressed(ctx, a); ok || err != nil {
			t.Errorf("Suppressed(%q) = %v, %v", a, ok, err)
		}
	}
}

// TestAttachOnlyKeepsTTL: an ops command with another suppress_for does
// not change the server's bucket; the server (re)opening it does.
func TestAttachOnlyKeepsTTL(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil) // 720h
	ctx := context.Background()
	other := testConfig(t)
	other.Bounces.SuppressFor = config.Duration(time.Hour)
	tool, err := New(ctx, Options{Settings: settingsOf(other), Queue: f.q, AttachOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := tool.Suppressions().TTL(); got != 720*time.Hour {
		t.Errorf("attached TTL %v, want the bucket's 720h", got)
	}
	if _, err := os.Stat(filepath.Join(other.DataDir, KeyFileName)); !os.IsNotExist(err) {
		t.Errorf("bounce.key created without verp_domain: %v", err)
	}
	srv, err := New(ctx, Options{Settings: settingsOf(other), Queue: f.q})
	if err != nil {
		t.Fatal(err)
	}
	if got := srv.Suppressions().TTL(); got != time.Hour {
		t.Errorf("server TTL %v, want 1h from its config", got)
	}
}

// TestSuppressionLookupsAreDirectGets: the bucket allows direct gets, so
// any current replica answers a lookup (RCPT does not wait for the
// stream's leader); opening the list turns them on for a bucket made
// without them.
func TestSuppressionLookupsAreDirectGets(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	js := queuetest.RunJetStream(t).JetStream()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: SuppressBucket, History: 1})
	if err != nil {
		t.Fatal(err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.(*jetstream.KeyValueBucketStatus).StreamInfo().Config
	cfg.AllowDirect = false
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	l, err := OpenSuppressionList(ctx, SuppressionOptions{JetStream: js})
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, "KV_"+SuppressBucket)
	if err != nil {
		t.Fatal(err)
	}
	if !s.CachedInfo().Config.AllowDirect {
		t.Fatal("suppression bucket without direct gets after OpenSuppressionList")
	}
	if _, ok, err := l.Suppressed(ctx, "nobody@example.org"); ok || err != nil {
		t.Fatalf("lookup: %v, %v", ok, err)
	}
}
