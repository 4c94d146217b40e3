package relaytest

import (
	"testing"
	"time"
)

// Wait is the deadline of Eventually: generous, because tests run with
// -race on a loaded two-core machine and only a broken test waits that long.
const Wait = 60 * time.Second

// pollInterval is how often Eventually checks its condition.
const pollInterval = 10 * time.Millisecond

// Eventually polls cond until it holds and fails the test naming what when
// it does not within Wait. It is the one way tests wait for something
// asynchronous; a sleep is never synchronisation. cond runs on the test's
// goroutine.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(Wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", Wait, what)
		}
		time.Sleep(pollInterval)
	}
}
