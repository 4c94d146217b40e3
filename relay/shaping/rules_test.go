package shaping

import (
	"context"
	"errors"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/relay/relaytest"
)

var reply428 = Reply{Code: 421, Enhanced: "4.7.28", Text: "unusual rate of unsolicited mail"}

// waitsFor reports whether Connect on n answers a wait for reason now.
func waitsFor(n *testNode, c Class, reason string) bool {
	conn, w, ok := n.s.Connect(context.Background(), c, "")
	if ok {
		conn.Release()
		return false
	}
	return w.Reason == reason
}

// changes returns the Events of both nodes.
func changes(nodes ...*testNode) []Change {
	var all []Change
	for _, n := range nodes {
		all = append(all, n.events.all()...)
	}
	return all
}

// A rule counts its threshold across nodes, suspends the provider on
// every node, tells it once, and ends when its time is up.
func TestRuleSuspendsAcrossNodesAndEnds(t *testing.T) {
	t.Parallel()
	ns := startNATS(t)
	rule := Rule{Name: "gmail-428", Providers: []string{"p"}, Reply: regexp.MustCompile(`4\.7\.28|unusual rate`),
		Threshold: 3, Window: time.Minute, Action: Action{Suspend: 3 * time.Second}}
	set := provider(Limits{Connections: 5}, rule)
	a, b := startNode(t, ns, "a", set), startNode(t, ns, "b", set)
	conn := connect(t, b, classP, "")

	a.s.Observe(classP, reply428)
	b.s.Observe(classP, Reply{Code: 550, Enhanced: "5.1.1", Text: "no such user"}) // no match
	b.s.Observe(classP, Reply{Code: 250, Text: "unusual rate"})                    // not an error
	b.s.Observe(classP, reply428)
	relaytest.Eventually(t, "two matches counted", func() bool { return countOf(t, a, "r.gmail-428.p") == 2 })
	if waitsFor(b, classP, ReasonSuspended) {
		t.Fatal("suspended below the threshold")
	}
	a.s.Observe(classP, reply428)
	relaytest.Eventually(t, "b suspended", func() bool { return waitsFor(b, classP, ReasonSuspended) })
	if w, ok := conn.Send(context.Background()); ok || w.Reason != ReasonSuspended {
		t.Fatalf("send on an open connection while suspended: ok %v, reason %q", ok, w.Reason)
	}
	relaytest.Eventually(t, "the suspension's end", func() bool {
		c, ok := tryConnect(b, classP)
		if ok {
			c.Release()
		}
		return ok
	})
	relaytest.Eventually(t, "begin and end told once", func() bool { return len(changes(a, b)) >= 2 })
	ch := changes(a, b)
	if len(ch) != 2 || ch[0].Ended || !ch[1].Ended || ch[0].Action != ActionSuspend || ch[0].Rule != "gmail-428" ||
		ch[0].Class != classP || ch[1].Resumed {
		t.Fatalf("events: %+v", ch)
	}
	if _, ok := conn.Send(context.Background()); !ok {
		t.Fatal("send after the suspension refused")
	}
}

// countOf is the number of match times stored under key.
func countOf(t *testing.T, n *testNode, key string) int {
	t.Helper()
	kv, err := n.js.KeyValue(context.Background(), Bucket)
	if err != nil {
		t.Fatal(err)
	}
	v, _, err := get(context.Background(), kv, key)
	if err != nil {
		t.Fatal(err)
	}
	return len(recent(v, time.Time{}))
}

// Resume on any process lifts a suspension on every node; the node that
// began it tells its end.
func TestResumeLiftsOnOtherNode(t *testing.T) {
	t.Parallel()
	ns := startNATS(t)
	rule := Rule{Providers: []string{"*"}, Reply: regexp.MustCompile(`4\.7\.28`), Threshold: 1,
		Window: time.Minute, Action: Action{Suspend: time.Hour}}
	set := provider(Limits{}, rule)
	a, b := startNode(t, ns, "a", set), startNode(t, ns, "b", set)
	a.s.Observe(classP, reply428)
	relaytest.Eventually(t, "b suspended", func() bool { return waitsFor(b, classP, ReasonSuspended) })

	st, err := Status(context.Background(), b.js, set)
	if err != nil || len(st) != 1 || st[0].SuspendedUntil == nil || st[0].Reason == "" {
		t.Fatalf("status while suspended: %+v, %v", st, err)
	}
	woke := b.s.Changed(classP)
	if err := Resume(context.Background(), b.js, "p"); err != nil {
		t.Fatal(err)
	}
	relaytest.Eventually(t, "b's Changed on resume", func() bool {
		select {
		case <-woke:
			return true
		default:
			return false
		}
	})
	relaytest.Eventually(t, "b resumed", func() bool {
		c, ok := tryConnect(b, classP)
		if ok {
			c.Release()
		}
		return ok
	})
	relaytest.Eventually(t, "the end told", func() bool { return len(a.events.all()) == 2 })
	if ch := a.events.all(); !ch[1].Ended || !ch[1].Resumed || ch[0].Rule != "rule 1" {
		t.Fatalf("events: %+v", ch)
	}
	if len(b.events.all()) != 0 {
		t.Fatalf("b told: %+v", b.events.all())
	}
	if err := Resume(context.Background(), b.js, "p"); !errors.Is(err, ErrNotSuspended) {
		t.Fatalf("second resume: %v", err)
	}
	st, err = Status(context.Background(), b.js, set)
	if err != nil || st[0].SuspendedUntil != nil || st[0].Reason != "" {
		t.Fatalf("status after resume: %+v, %v", st[0], err)
	}
}

// A rule's lower rate applies on the other node.
func TestRuleLowersRate(t *testing.T) {
	t.Parallel()
	ns := startNATS(t)
	rule := Rule{Providers: []string{"p"}, Reply: regexp.MustCompile(`slow down`), Threshold: 1, Window: time.Minute,
		Action: Action{Rate: Rate{Count: 10, Per: time.Minute}, For: time.Hour}}
	set := provider(Limits{Rate: Rate{Count: 600, Per: time.Minute}}, rule)
	a, b := startNode(t, ns, "a", set), startNode(t, ns, "b", set)
	a.s.Observe(classP, Reply{Code: 451, Text: "please slow down"})
	relaytest.Eventually(t, "b's rate lowered", func() bool {
		st, err := Status(context.Background(), b.js, set)
		return err == nil && st[0].Effective == Rate{Count: 10, Per: time.Minute} && st[0].RateUntil != nil
	})
	relaytest.Eventually(t, "b's copy", func() bool { return b.s.class(classP).action.Load() != nil })
	conn := connect(t, b, classP, "")
	sent := 0
	for {
		if _, ok := conn.Send(context.Background()); !ok {
			break
		}
		sent++
	}
	if sent > (Rate{Count: 10, Per: time.Minute}).Burst() {
		t.Fatalf("%d sends at once at the lowered rate 10/m", sent)
	}
}

// Without rules a throttling reply halves the rate, cluster-wide, once per
// step.
func TestBuiltinBackoffHalvesRate(t *testing.T) {
	t.Parallel()
	ns := startNATS(t)
	set := provider(Limits{Rate: Rate{Count: 600, Per: time.Minute}})
	for _, name := range []string{"q", "ra", "rb"} {
		set.Providers = append(set.Providers, Provider{Name: name, MX: []string{"." + name + ".example"}})
	}
	a, b := startNode(t, ns, "a", set), startNode(t, ns, "b", set)
	a.s.Observe(classP, Reply{Code: 421, Text: "too busy", AtGreeting: true})
	a.s.Observe(Class{Provider: "q", Key: "q"}, Reply{Code: 451, Enhanced: "4.7.650", Text: "throttled"})
	relaytest.Eventually(t, "both backed off", func() bool {
		st, err := Status(context.Background(), b.js, set)
		return err == nil && st[0].Effective == Rate{Count: 300, Per: time.Minute} &&
			st[1].Effective == Rate{Count: 30, Per: time.Minute}
	})
	// More signals within the step change nothing; the sentinels (handled
	// after them, in order) say when they were handled.
	a.s.Observe(classP, reply428)
	b.s.Observe(classP, reply428)
	a.s.Observe(Class{Provider: "ra", Key: "ra"}, reply428)
	b.s.Observe(Class{Provider: "rb", Key: "rb"}, reply428)
	relaytest.Eventually(t, "the sentinels backed off", func() bool { return len(changes(a, b)) >= 4 })
	st, _ := Status(context.Background(), b.js, set)
	if st[0].Effective != (Rate{Count: 300, Per: time.Minute}) || st[0].SuspendedUntil != nil {
		t.Fatalf("after more signals within a minute: %+v", st[0])
	}
	if ch := changes(a, b); len(ch) != 4 {
		t.Fatalf("changes: %+v", ch)
	}
	for _, c := range changes(a, b) {
		if c.Action != ActionBackoff || c.Rule != "backoff" || c.Ended {
			t.Fatalf("change %+v", c)
		}
	}
}

func TestThrottled(t *testing.T) {
	for _, tc := range []struct {
		r    Reply
		want bool
	}{
		{Reply{Code: 421, AtGreeting: true, Text: "busy"}, true},
		{Reply{Code: 421, Text: "busy"}, false},
		{Reply{Code: 421, Enhanced: "4.7.28", Text: "x"}, true},
		{Reply{Code: 451, Enhanced: "4.7.650", Text: "x"}, true},
		{Reply{Code: 450, Enhanced: "4.7.1", Text: "Too many connections"}, true},
		{Reply{Code: 450, Enhanced: "4.7.0", Text: "you are being throttled"}, true},
		{Reply{Code: 450, Enhanced: "4.7.1", Text: "greylisted"}, false},
		{Reply{Code: 550, Enhanced: "5.7.1", Text: "rate"}, false},
		{Reply{Code: 250, Enhanced: "4.7.28"}, false},
	} {
		if got := throttled(tc.r); got != tc.want {
			t.Errorf("throttled(%v) = %v, want %v", tc.r, got, tc.want)
		}
	}
}

func TestHalve(t *testing.T) {
	m := time.Minute
	for _, tc := range []struct{ in, want Rate }{
		{Rate{600, m}, Rate{300, m}}, {Rate{3, m}, Rate{1, m}}, {Rate{1, time.Second}, Rate{1, 2 * time.Second}},
		{Rate{1, m}, Rate{1, m}}, {Rate{1, time.Hour}, Rate{1, time.Hour}},
	} {
		if got := halve(tc.in); got != tc.want {
			t.Errorf("halve(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// Matches older than the window do not count toward the threshold.
func TestRuleWindowSlides(t *testing.T) {
	t.Parallel()
	ns := startNATS(t)
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	rule := Rule{Name: "w", Providers: []string{"p"}, Reply: regexp.MustCompile(`4\.7\.28`), Threshold: 2,
		Window: 10 * time.Minute, Action: Action{Suspend: time.Hour}}
	set := provider(Limits{}, rule)
	a := startNodeWith(t, ns, "a", set, func(o *Options) { o.Now = clock })
	a.s.Observe(classP, reply428)
	relaytest.Eventually(t, "one match counted", func() bool { return countOf(t, a, "r.w.p") == 1 })
	mu.Lock()
	now = now.Add(11 * time.Minute)
	mu.Unlock()
	a.s.Observe(classP, reply428)
	relaytest.Eventually(t, "the old match dropped", func() bool {
		kv, _ := a.js.KeyValue(context.Background(), Bucket)
		v, _, err := get(context.Background(), kv, "r.w.p")
		return err == nil && len(recent(v, time.Time{})) == 1 && recent(v, time.Time{})[0] == clock().UnixNano()
	})
	if waitsFor(a, classP, ReasonSuspended) {
		t.Fatal("suspended by matches further apart than the window")
	}
	a.s.Observe(classP, reply428)
	relaytest.Eventually(t, "suspended by two matches within the window", func() bool {
		return waitsFor(a, classP, ReasonSuspended)
	})
}

// A rule for "*" suspends a destination of the default on every node.
func TestStarRuleSuspendsDefaultDestination(t *testing.T) {
	t.Parallel()
	ns := startNATS(t)
	rule := Rule{Providers: []string{"*"}, Reply: regexp.MustCompile(`^421 `), Threshold: 1, Window: time.Minute,
		Action: Action{Rate: Rate{Count: 2, Per: time.Minute}, For: time.Hour}}
	set := Settings{Rules: []Rule{rule}}
	a, b := startNode(t, ns, "a", set), startNode(t, ns, "b", set)
	dest := a.s.Classify("shop.example", []string{"mx.shop.example"})
	a.s.Observe(dest, Reply{Code: 421, Text: "try later"})
	relaytest.Eventually(t, "b's copy of the lowered rate", func() bool { return b.s.class(dest).action.Load() != nil })
	conn := connect(t, b, dest, "")
	sent := 0
	for {
		if _, ok := conn.Send(context.Background()); !ok {
			break
		}
		sent++
	}
	if sent == 0 || sent > (Rate{Count: 2, Per: time.Minute}).Burst() {
		t.Fatalf("%d sends at once at 2/m", sent)
	}
	if err := Resume(context.Background(), b.js, dest.Key); err != nil {
		t.Fatal(err)
	}
	relaytest.Eventually(t, "resumed", func() bool { return b.s.class(dest).action.Load() == nil })
}
