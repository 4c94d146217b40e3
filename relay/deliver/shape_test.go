package deliver_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/deliver"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/relaytest"
	"github.com/jetrelay/jetrelay/relay/shaping"
)

// sourceDialer dials loopback only, from a given local address when asked
// (smtpclient.SourceDialer).
type sourceDialer struct{ relaytest.LoopbackDialer }

func (*sourceDialer) DialFrom(ctx context.Context, network, address string, local netip.Addr) (net.Conn, error) {
	d := relaytest.LoopbackDialer{Dialer: net.Dialer{LocalAddr: &net.TCPAddr{IP: local.AsSlice()}}}
	return d.DialContext(ctx, network, address)
}

// googleMX publishes domains whose MX is mx.google.test at ip.
func (h *harness) googleMX(ip string, doms ...string) {
	h.zone.AddA("aspmx.google.test", ip)
	for _, dom := range doms {
		h.zone.AddMX(dom, 10, "aspmx.google.test")
	}
}

// openShaper opens a Shaper on q's JetStream for node, closed at test end.
func openShaper(t *testing.T, q *queue.Queue, node string, set shaping.Settings, ev func(shaping.Change)) *shaping.Shaper {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	sh, err := shaping.Open(ctx, shaping.Options{JetStream: q.JetStream(), Node: node, Logger: relaytest.Logger(t),
		Events: ev}, set)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sh.Close)
	return sh
}

func google(l shaping.Limits) []shaping.Provider {
	return []shaping.Provider{{Name: "google", MX: []string{".google.test"}, Limits: l}}
}

// rcptOf is the recipient of a (the shaping tests send one per message).
func rcptOf(a relaytest.Arrival) string { return strings.Join(a.Rcpts, ",") }

// allDelivered waits until every rcpt was received once by mx and no
// entry of ids is stored any more: nothing lost, nothing sent twice.
func allDelivered(t *testing.T, h *harness, mx *relaytest.MeasureMX, rcpts []string, ids []string) {
	t.Helper()
	deadline := time.Now().Add(3 * wait)
	for len(mx.Arrivals()) < len(rcpts) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d messages received", len(mx.Arrivals()), len(rcpts))
		}
		time.Sleep(20 * time.Millisecond) // polling
	}
	got := map[string]int{}
	for _, m := range mx.Arrivals() {
		got[rcptOf(m)]++
	}
	for _, r := range rcpts {
		if got[r] != 1 {
			t.Errorf("%s received %d times", r, got[r])
		}
	}
	for _, id := range ids {
		relaytest.Eventually(t, "entry "+id+" settled", func() bool { return !h.stored(id) })
	}
	if f := h.rep.failuresAll(); len(f) > 0 {
		t.Fatalf("failures reported: %+v", f)
	}
}

func (r *reporter) failuresAll() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, f := range r.failed {
		out = append(out, f.Rcpt.Addr+": "+f.Reply.String())
	}
	return out
}

// A provider limit of 2 connections and 600/m holds under 150 queued
// messages to three of its domains, delivered by two engines on one
// JetStream (two connections, two Shapers): the fake MX never sees more
// than 2 connections at once, nor more arrivals in a window than the pace
// plus its burst allows, nor more than 20 messages on one connection
// (per_connection: QUIT and connect again). Waiting costs no attempt.
func TestShapingLimitsHoldAcrossEngines(t *testing.T) {
	t.Parallel()
	h := newHarnessListen(t)
	cfg := h.config()
	mx := relaytest.StartMeasureMX(t, "", h.port)
	h.googleMX(mx.IP, "g1.test", "g2.test", "g3.test")
	rate := shaping.Rate{Count: 600, Per: time.Minute}
	set := shaping.Settings{Default: shaping.Limits{Connections: 10},
		Providers: google(shaping.Limits{Connections: 2, Rate: rate, PerConnection: 20})}
	h.shaper = openShaper(t, h.q, "n1", set, nil)
	h.start(cfg)
	q2 := queuetest.OpenQueue(t, h.q.ClientURL(), 1, relaytest.Logger(t), queue.PublishOptions{})
	h.shaper = openShaper(t, q2, "n2", set, nil)
	h.startOn(q2, cfg)

	var rcpts, ids []string
	for i := range 150 {
		r := fmt.Sprintf("u%d@g%d.test", i, i%3+1)
		rcpts = append(rcpts, r)
		ids = append(ids, h.send([]string{r}))
	}
	allDelivered(t, h, mx, rcpts, ids)
	peak, n := mx.Peak()
	if peak > 2 {
		t.Errorf("%d connections open at once, limit 2", peak)
	}
	if most := mx.PerConnection(); most > 20 || n < 150/20 {
		t.Errorf("%d connections, at most %d messages on one: per_connection 20 not kept", n, most)
	}
	msgs := mx.Arrivals()
	for _, w := range []time.Duration{time.Second, 5 * time.Second} {
		limit := int(int64(rate.Count)*int64(w)/int64(rate.Per)) + rate.Burst()
		n := relaytest.MaxInWindow(msgs, w)
		t.Logf("at most %d messages within %s (limit %d), %d connections at once", n, w, limit, peak)
		if n > limit {
			t.Errorf("%d messages within %s, limit %d (600/m plus a burst of %d)", n, w, limit, rate.Burst())
		}
	}
	for _, r := range rcpts {
		if ev := h.deliveries(r, events.StatusDelivered); len(ev) != 1 || ev[0].Attempt != 1 {
			t.Fatalf("%s: delivered events %+v, want one at attempt 1 (waits are no attempts)", r, ev)
		}
	}
}

// newHarnessListen is newHarness whose JetStream listens on loopback, so
// a second engine can connect (queuetest.OpenQueue).
func newHarnessListen(t *testing.T) *harness {
	t.Helper()
	h := newHarness(t)
	h.q = queuetest.RunJetStream(t, queuetest.Options{DataDir: t.TempDir(), Listen: "127.0.0.1:0"})
	return h
}

// A rule suspends its provider once its threshold of matching replies is
// reached: entries that come up meanwhile are deferred without an
// attempt, marked for queue ls, and delivered once the suspension ends.
func TestShapingRuleSuspendsAndResumes(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	cfg := h.config()
	mx := relaytest.StartMeasureMX(t, "", h.port)
	h.googleMX(mx.IP, "s.test")
	var mu sync.Mutex
	refusals := 3
	mx.SetMailReply(func() *smtp.SMTPError {
		mu.Lock()
		defer mu.Unlock()
		if refusals == 0 {
			return nil
		}
		refusals--
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 28}, Message: "unusual rate of mail"}
	})
	var changes []shaping.Change
	set := shaping.Settings{Default: shaping.Limits{Connections: 10}, Providers: google(shaping.Limits{}),
		Rules: []shaping.Rule{{Name: "gmail-rate", Providers: []string{"google"}, Reply: regexp.MustCompile(`4\.7\.28`),
			Threshold: 3, Window: time.Minute, Action: shaping.Action{Suspend: 4 * time.Second}}}}
	h.shaper = openShaper(t, h.q, "n1", set, func(c shaping.Change) { mu.Lock(); changes = append(changes, c); mu.Unlock() })
	h.start(cfg)

	var rcpts, ids []string
	for i := range 3 {
		rcpts = append(rcpts, fmt.Sprintf("first%d@s.test", i))
		ids = append(ids, h.send(rcpts[i:i+1]))
		relaytest.Eventually(t, "refused", func() bool { return len(h.deliveries(rcpts[i], events.StatusDeferred)) >= 1 })
	}
	relaytest.Eventually(t, "suspension began", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(changes) > 0 && changes[0].Action == shaping.ActionSuspend && !changes[0].Ended
	})
	for i := range 5 {
		r := fmt.Sprintf("later%d@s.test", i)
		rcpts = append(rcpts, r)
		ids = append(ids, h.send([]string{r}))
	}
	relaytest.Eventually(t, "a deferred entry marked waiting", func() bool {
		items, err := h.q.List(context.Background(), queue.ListOptions{Domain: "s.test"})
		if err != nil {
			return false
		}
		for _, it := range items {
			if it.Waiting == "shaping: suspended (google)" && it.Env.Attempt == 0 {
				return true
			}
		}
		return false
	})
	allDelivered(t, h, mx, rcpts, ids)
	mu.Lock()
	ended := len(changes) > 1 && changes[len(changes)-1].Ended
	mu.Unlock()
	if !ended {
		t.Fatalf("suspension end not reported: %+v", changes)
	}
	for _, r := range rcpts[3:] {
		ev := h.deliveries(r, "")
		last := ev[len(ev)-1]
		if last.Status != events.StatusDelivered || last.Attempt != 1 {
			t.Fatalf("%s: events %+v, want delivered at attempt 1 (the suspension costs no attempt)", r, ev)
		}
		for _, e := range ev[:len(ev)-1] {
			if e.Reason != "not_attempted" || !strings.Contains(e.Reply, "suspended") {
				t.Fatalf("%s: %+v is no deferral for the suspension", r, e)
			}
		}
	}
}

// A provider limited to one connection at 60/m does not hold up mail to
// another destination: it arrives within a second or so of being queued
// (a generous bound on a loaded machine), long before the limited
// provider's queue is through.
func TestLimitedProviderDoesNotDelayOthers(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	cfg := h.config()
	slow := relaytest.StartMeasureMX(t, "", h.port)
	fast := relaytest.StartMeasureMX(t, "", h.port)
	h.googleMX(slow.IP, "slow.test")
	h.domain("fast.test", fast.IP)
	set := shaping.Settings{Default: shaping.Limits{Connections: 10},
		Providers: google(shaping.Limits{Connections: 1, Rate: shaping.Rate{Count: 60, Per: time.Minute}})}
	h.shaper = openShaper(t, h.q, "n1", set, nil)
	h.start(cfg)
	var slowR, fastR, ids []string
	for i := range 40 {
		slowR = append(slowR, fmt.Sprintf("s%d@slow.test", i))
		ids = append(ids, h.send(slowR[i:i+1]))
	}
	relaytest.Eventually(t, "the limited provider delivering", func() bool { return len(slow.Arrivals()) > 0 })
	sent := map[string]time.Time{}
	for i := range 10 {
		r := fmt.Sprintf("f%d@fast.test", i)
		fastR = append(fastR, r)
		sent[r] = time.Now()
		ids = append(ids, h.send([]string{r}))
	}
	relaytest.Eventually(t, "the other destination's mail", func() bool { return len(fast.Arrivals()) == 10 })
	relaytest.Eventually(t, "waiting entries in the provider's status", func() bool {
		st, err := shaping.Status(context.Background(), h.q.JetStream(), set)
		return err == nil && len(st) == 1 && st[0].Waiting > 0
	})
	if n := len(slow.Arrivals()); n >= 30 {
		t.Fatalf("the limited provider got %d of 40 first: it is not limited", n)
	}
	for _, m := range fast.Arrivals() {
		if d := m.At.Sub(sent[rcptOf(m)]); d > 3*time.Second {
			t.Errorf("%s arrived %s after it was queued", rcptOf(m), d)
		}
	}
	allDelivered(t, h, slow, slowR, nil)
	allDelivered(t, h, fast, fastR, ids)
}

// Each connection binds a source of the entry's user's pool and says its
// EHLO name; the MX sees that address; events carry the source. A user
// without a pool uses "default".
func TestSourcesBindPerPool(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	cfg := h.config()
	mx := relaytest.StartMeasureMX(t, "", h.port)
	h.domain("pool.test", mx.IP)
	h.dialer = &sourceDialer{}
	h.editSet = func(s *deliver.Settings) {
		s.Sources = []deliver.Source{{Name: "a", Addr: netip.MustParseAddr("127.0.0.11"), EHLO: "mta-a.test"},
			{Name: "b", Addr: netip.MustParseAddr("127.0.0.12"), EHLO: "mta-b.test"}}
		s.Pools = map[string][]string{"default": {"a", "b"}, "marketing": {"b"}}
		s.UserPools = map[string]string{"shop": "marketing"}
	}
	h.start(cfg)
	var rcpts, ids []string
	for i := range 20 {
		user := map[bool]string{true: "shop"}[i%2 == 1]
		rcpts = append(rcpts, fmt.Sprintf("u%d@pool.test", i))
		ids = append(ids, h.send(rcpts[i:i+1], func(e *queue.Envelope) { e.User = user }))
	}
	allDelivered(t, h, mx, rcpts, ids)
	helo := map[string]string{"127.0.0.11": "mta-a.test", "127.0.0.12": "mta-b.test"}
	name := map[string]string{"127.0.0.11": "a", "127.0.0.12": "b"}
	for _, m := range mx.Arrivals() {
		var i int
		fmt.Sscanf(rcptOf(m), "u%d@", &i)
		if helo[m.Remote] != m.Helo || (i%2 == 1 && m.Remote != "127.0.0.12") {
			t.Errorf("%s came from %s saying EHLO %s", rcptOf(m), m.Remote, m.Helo)
		}
		if ev := h.deliveries(rcptOf(m), events.StatusDelivered); len(ev) != 1 || ev[0].Source != name[m.Remote] {
			t.Errorf("%s: delivered events %+v, want source %s", rcptOf(m), ev, name[m.Remote])
		}
	}
}

// CheckSources names each source that cannot be bound.
func TestCheckSources(t *testing.T) {
	t.Parallel()
	errs := deliver.CheckSources([]deliver.Source{{Name: "a", Addr: netip.MustParseAddr("127.0.0.11")},
		{Name: "gone", Addr: netip.MustParseAddr("192.0.2.1")}, {Name: "none"}})
	if len(errs) != 2 || !strings.Contains(errs[0].Error(), "gone") || !strings.Contains(errs[1].Error(), "none") {
		t.Fatalf("errors %v, want gone and none", errs)
	}
}

// A reload that leaves the source and the way connections are made alone
// keeps the open connection; one that changes the source's EHLO name
// ends it, and the next connection says the new name.
func TestReloadKeepsConnections(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	cfg := h.config()
	cfg.Delivery.Timeouts.Idle = config.Duration(time.Minute) // the connection outlives the test's pauses
	cfg.Delivery.MaxPerDestination = 1                        // one worker: its connection is the one reused
	mx := relaytest.StartMeasureMX(t, "", h.port)
	h.domain("reload.test", mx.IP)
	h.dialer = &sourceDialer{}
	set := settingsOf(cfg)
	set.Sources = []deliver.Source{{Name: "a", Addr: netip.MustParseAddr("127.0.0.11"), EHLO: "mta-a.test"}}
	set.Pools = map[string][]string{"default": {"a"}}
	h.editSet = func(s *deliver.Settings) { *s = set }
	h.shaper = openShaper(t, h.q, "n1", shaping.Settings{Default: shaping.Limits{Connections: 1}}, nil)
	h.start(cfg)
	var rcpts, ids []string
	send := func(wantConns int, helo string) {
		t.Helper()
		r := fmt.Sprintf("u%d@reload.test", len(rcpts))
		rcpts, ids = append(rcpts, r), append(ids, h.send([]string{r}))
		relaytest.Eventually(t, r+" received", func() bool { return len(mx.Arrivals()) == len(rcpts) })
		msgs := mx.Arrivals()
		if _, n := mx.Peak(); n != wantConns || msgs[len(msgs)-1].Helo != helo {
			t.Fatalf("after %s: %d connections, EHLO %s; want %d, %s", r, n, msgs[len(msgs)-1].Helo, wantConns, helo)
		}
	}
	reload := func(edit func(*deliver.Settings)) {
		t.Helper()
		edit(&set)
		apply, err := h.eng.Prepare(set)
		if err != nil {
			t.Fatal(err)
		}
		apply()
	}
	send(1, "mta-a.test")
	reload(func(s *deliver.Settings) { s.Retry.Schedule = []config.Duration{config.Duration(2 * time.Second)} })
	send(1, "mta-a.test")
	reload(func(s *deliver.Settings) {
		s.Sources = []deliver.Source{{Name: "a", Addr: netip.MustParseAddr("127.0.0.11"), EHLO: "mta-new.test"}}
	})
	send(2, "mta-new.test")
	allDelivered(t, h, mx, rcpts, ids)
}
