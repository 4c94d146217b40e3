package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/queue/queuetest"
)

// countsOf runs `queue ls --json` and returns domain's counts.
func countsOf(t *testing.T, o *opsEnv, domain string) map[queue.State]int {
	t.Helper()
	rc, out, errOut := runOps(t, queueMain, append([]string{"ls"}, o.args("--json")...)...)
	if rc != 0 {
		t.Fatalf("ls rc %d: %s", rc, errOut)
	}
	var counts []queue.DomainCount
	if err := json.Unmarshal([]byte(out), &counts); err != nil {
		t.Fatalf("ls --json: %v\n%s", err, out)
	}
	for _, c := range counts {
		if c.Domain == domain {
			return c.Counts
		}
	}
	return map[queue.State]int{}
}

// `queue ls` right after an action on a deferred entry shows the new
// state: the action returns once the entry has moved.
func TestQueueLsReflectsActionAtOnce(t *testing.T) {
	t.Parallel()
	o := newOpsEnv(t)
	const dom = "settle.example"
	dID := queuetest.EnqueueTo(t, o.q, dom)
	queuetest.EnqueueTo(t, o.q, dom)
	leaseTwo(t, o.q) // dID deferred for an hour, the other in flight
	steps := []struct {
		verb  string
		state queue.State
	}{
		{"hold", queue.StateHeld},
		{"release", queue.StateReady},
	}
	for _, s := range steps {
		rc, out, errOut := runOps(t, queueMain, append([]string{s.verb, dID}, o.args()...)...)
		if rc != 0 {
			t.Fatalf("%s rc %d: %s %s", s.verb, rc, out, errOut)
		}
		got := countsOf(t, o, dom)
		if got[s.state] != 1 || got[queue.StateDeferred] != 0 {
			t.Fatalf("ls right after %s: %v (want %s 1, deferred 0)", s.verb, got, s.state)
		}
		if strings.Contains(errOut, "still moving") {
			t.Fatalf("%s did not settle: %s", s.verb, errOut)
		}
	}
	queuetest.EnqueueTo(t, o.q, dom)
	leaseTwo(t, o.q) // dID (ready again, oldest) deferred again
	if got := countsOf(t, o, dom); got[queue.StateDeferred] != 1 {
		t.Fatalf("before retry: %v", got)
	}
	rc, out, errOut := runOps(t, queueMain, append([]string{"retry", dID}, o.args()...)...)
	if rc != 0 {
		t.Fatalf("retry rc %d: %s %s", rc, out, errOut)
	}
	if got := countsOf(t, o, dom); got[queue.StateDeferred] != 0 || got[queue.StateReady] != 1 {
		t.Fatalf("ls right after retry: %v (want ready 1, deferred 0)", got)
	}
}
