package shaping

import (
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/relay/relaytest"
)

// A reload applies new limits from the next decision; open connections
// stay, and waiters are woken.
func TestApplyKeepsOpenConnections(t *testing.T) {
	t.Parallel()
	ns := startNATS(t)
	a := startNode(t, ns, "a", provider(Limits{Connections: 2}))
	c1, c2 := connect(t, a, classP, ""), connect(t, a, classP, "")
	refused(t, a, classP, ReasonConnections)

	woke := a.s.Changed(classP)
	a.s.Apply(provider(Limits{Connections: 3}))
	select {
	case <-woke:
	default:
		t.Fatal("Apply did not wake the class")
	}
	c3 := connect(t, a, classP, "")

	a.s.Apply(provider(Limits{Connections: 1}))
	refused(t, a, classP, ReasonConnections)
	c1.Release()
	c2.Release()
	// c3 is still open: at the new limit, also once the view may be probed.
	probed := time.Now().Add(3 * testTimings.connPoll)
	relaytest.Eventually(t, "three probe periods", func() bool {
		refused(t, a, classP, ReasonConnections)
		return time.Now().After(probed)
	})
	c3.Release()
	relaytest.Eventually(t, "a connection under the lowered limit", func() bool {
		c, ok := tryConnect(a, classP)
		if ok {
			c.Release()
		}
		return ok
	})
}
