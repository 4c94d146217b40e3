package bounce

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/outcome"
)

func TestFailedQueuesOneDSN(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	ctx := context.Background()
	env := origEnv()
	if err := f.b.Failed(ctx, env, []byte(origMsg), []Result{rejected("bob@example.org", "")}); err != nil {
		t.Fatal(err)
	}
	// A redelivered entry reports the same failure again: still one DSN.
	if err := f.b.Failed(ctx, env, []byte(origMsg), []Result{rejected("bob@example.org", "")}); err != nil {
		t.Fatal(err)
	}
	got := f.queued(t)
	if len(got) != 1 {
		t.Fatalf("%d entries queued, want 1 DSN", len(got))
	}
	e := got[0].Env
	want := queue.Envelope{
		ID: "01DSN000000000000000A1", MsgID: "<01DSN000000000000000A1.dsn@relay.test>", From: "",
		Domain: "example.com", Rcpts: []queue.Recipient{{Addr: "app@example.com", Notify: []string{"NEVER"}}},
		Arrival: t0, IsDSN: true,
	}
	if diff := cmp.Diff(want, *e, cmp.FilterPath(func(p cmp.Path) bool {
		return p.String() == "Size" || p.String() == "Chunks"
	}, cmp.Ignore())); diff != "" {
		t.Errorf("DSN envelope (-want +got):\n%s", diff)
	}
	body, err := got[0].Body(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d := parseDSN(t, body)
	if len(d.rcpts) != 1 || d.rcpts[0].Get("Status") != "5.1.1" {
		t.Errorf("recipient blocks %v", d.rcpts)
	}
	evs := f.rec.Find(events.DSN, nil)
	if len(evs) != 1 || evs[0].QueueID != env.ID || evs[0].DSNID != e.ID || evs[0].Status != "queued" {
		t.Errorf("dsn events %+v, want one queued with queue_id %s dsn_id %s", evs, env.ID, e.ID)
	}
}

// TestNotify checks RFC 3461 §4.1 NOTIFY handling: which calls produce a DSN.
func TestNotify(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	ctx := context.Background()
	cases := []struct {
		name   string
		call   func(context.Context, *queue.Envelope, []byte, []Result) error
		notify []string
		want   int
	}{
		{"failed default", f.b.Failed, nil, 1},
		{"failed FAILURE", f.b.Failed, []string{"FAILURE"}, 1},
		{"failed NEVER", f.b.Failed, []string{"NEVER"}, 0},
		{"failed SUCCESS only", f.b.Failed, []string{"SUCCESS"}, 0},
		{"relayed SUCCESS", f.b.Relayed, []string{"SUCCESS", "FAILURE"}, 1},
		{"relayed default", f.b.Relayed, nil, 0},
	}
	for i, tc := range cases {
		env := origEnv()
		env.ID = "01JRNOTIFY00000000000" + string(rune('A'+i))
		r := rejected("bob@example.org", "")
		r.Rcpt.Notify = tc.notify
		if err := tc.call(ctx, env, []byte(origMsg), []Result{r}); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := len(f.queued(t)); got != tc.want {
			t.Errorf("%s: %d DSNs, want %d", tc.name, got, tc.want)
		}
	}
}

func TestRelayedDSN(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	r := Result{Rcpt: queue.Recipient{Addr: "bob@example.org", Notify: []string{"SUCCESS"}},
		Reply: outcome.Reply{Code: 250, Enh: "2.0.0", Text: "2.0.0 Ok: queued as 4F2"}, MX: "mx1.example.org", Time: t0}
	if err := f.b.Relayed(context.Background(), origEnv(), []byte(origMsg), []Result{r}); err != nil {
		t.Fatal(err)
	}
	got := f.queued(t)
	if len(got) != 1 {
		t.Fatalf("%d DSNs, want 1", len(got))
	}
	body, _ := got[0].Body(context.Background())
	d := parseDSN(t, body)
	if a, s := d.rcpts[0].Get("Action"), d.rcpts[0].Get("Status"); a != "relayed" || s != "2.0.0" {
		t.Errorf("Action %q Status %q, want relayed 2.0.0", a, s)
	}
}

// TestNeverBounced: no DSN to the null sender, none about a DSN (RFC 3461
// §6.2); both are logged as dropped.
func TestNeverBounced(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	null := origEnv()
	null.From = ""
	isDSN := origEnv()
	isDSN.ID, isDSN.From, isDSN.IsDSN = "01JRDSN000000000000000", "", true
	for _, env := range []*queue.Envelope{null, isDSN} {
		rcpts := []Result{rejected("bob@example.org", "")}
		if err := f.b.Failed(context.Background(), env, []byte(origMsg), rcpts); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(f.queued(t)); n != 0 {
		t.Fatalf("%d DSNs queued, want none", n)
	}
	evs := f.rec.Find(events.DSN, nil)
	if len(evs) != 2 {
		t.Fatalf("dsn events %+v, want 2 dropped", evs)
	}
	for i, want := range []string{"null reverse-path", "itself a delivery status notification"} {
		if evs[i].Status != "dropped" || !strings.Contains(evs[i].Reason, want) {
			t.Errorf("event %d: status %q reason %q, want dropped with %q", i, evs[i].Status, evs[i].Reason, want)
		}
	}
}

// TestMixedTransaction: of two recipients only the one reported (and
// asking for it) is listed, in a single DSN.
func TestMixedTransaction(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	quiet := rejected("dave@example.org", "")
	quiet.Rcpt.Notify = []string{"NEVER"}
	failed := []Result{rejected("bob@example.org", ""), quiet, rejected("carol@example.org", "")}
	if err := f.b.Failed(context.Background(), origEnv(), []byte(origMsg), failed); err != nil {
		t.Fatal(err)
	}
	got := f.queued(t)
	if len(got) != 1 {
		t.Fatalf("%d DSNs, want 1", len(got))
	}
	body, _ := got[0].Body(context.Background())
	d := parseDSN(t, body)
	var listed []string
	for _, r := range d.rcpts {
		listed = append(listed, r.Get("Final-Recipient"))
	}
	if diff := cmp.Diff([]string{"rfc822; bob@example.org", "rfc822; carol@example.org"}, listed); diff != "" {
		t.Errorf("listed recipients (-want +got):\n%s", diff)
	}
}

func TestDelayNoticeOnce(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.Bounces.DelayNoticeAfter = config.Duration(4 * time.Hour)
	f := newFixture(t, cfg)
	ctx := context.Background()
	env := origEnv() // arrived 2h ago
	r := rejected("bob@example.org", "")
	r.Code, r.Enh, r.Text, r.Temporary = 421, "4.4.2", "4.4.2 try later", true
	if err := f.b.Delayed(ctx, env, []byte(origMsg), []Result{r}); err != nil {
		t.Fatal(err)
	}
	if n := len(f.queued(t)); n != 0 || env.DelayNotified {
		t.Fatalf("notice before delay_notice_after: %d queued, notified=%v", n, env.DelayNotified)
	}
	f.now = t0.Add(3 * time.Hour)
	for range 2 {
		if err := f.b.Delayed(ctx, env, []byte(origMsg), []Result{r}); err != nil {
			t.Fatal(err)
		}
	}
	got := f.queued(t)
	if len(got) != 1 || !env.DelayNotified {
		t.Fatalf("%d notices, notified=%v; want 1 and true", len(got), env.DelayNotified)
	}
	body, _ := got[0].Body(ctx)
	if a := parseDSN(t, body).rcpts[0].Get("Action"); a != "delayed" {
		t.Errorf("Action %q, want delayed", a)
	}
}

// TestSuppressOnHardBounce: 5.1.x about the recipient suppresses it;
// other permanent codes, sender codes and temporary failures do not.
func TestSuppressOnHardBounce(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	ctx := context.Background()
	cases := []struct {
		addr, enh string
		temp      bool
		want      bool
	}{
		{"a@example.org", "5.1.1", false, true},
		{"b@example.org", "5.1.2", false, false}, // a DNS verdict, not a mailbox one
		{"f@example.org", "5.1.6", false, true},
		{"c@example.org", "5.7.1", false, false},
		{"d@example.org", "5.1.8", false, false},
		{"e@example.org", "4.1.1", true, false},
	}
	var failed []Result
	for _, c := range cases {
		r := rejected(c.addr, "")
		r.Enh, r.Temporary = c.enh, c.temp
		failed = append(failed, r)
	}
	if err := f.b.Failed(ctx, origEnv(), []byte(origMsg), failed); err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		since, ok, err := f.b.Suppressed(ctx, strings.ToUpper(c.addr))
		if err != nil || ok != c.want || (ok && !since.Equal(t0)) {
			t.Errorf("%s after %s: suppressed=%v since=%v err=%v, want %v", c.addr, c.enh, ok, since, err, c.want)
		}
	}
	evs := f.rec.Find(events.Suppressed, nil)
	if len(evs) != 2 || evs[0].Actor != ActorDelivery || evs[0].QueueID != origEnv().ID {
		t.Errorf("suppressed events %+v", evs)
	}
}

func TestSuppressDisabled(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	off := false
	cfg.Bounces.Suppress = &off
	f := newFixture(t, cfg)
	ctx := context.Background()
	if err := f.b.Failed(ctx, origEnv(), []byte(origMsg), []Result{rejected("bob@example.org", "")}); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := f.b.Suppressed(ctx, "bob@example.org"); ok {
		t.Error("suppressed with bounces.suppress off")
	}
	if l, _ := f.b.Suppressions().List(ctx); len(l) != 0 {
		t.Errorf("list %v, want empty", l)
	}
}
