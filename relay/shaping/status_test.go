package shaping

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/relay/relaytest"
	"github.com/rs/zerolog"
)

// Status sums connections, waiting entries and sent messages of both nodes.
func TestStatusSumsNodes(t *testing.T) {
	t.Parallel()
	ns := startNATS(t)
	set := provider(Limits{Connections: 4, Rate: Rate{Count: 6000, Per: time.Minute}})
	a, b := startNode(t, ns, "a", set), startNode(t, ns, "b", set)
	ca, cb := connect(t, a, classP, ""), connect(t, b, classP, "")
	connect(t, b, classP, "")
	a.s.SetWaiting(classP, 3)
	b.s.SetWaiting(classP, 4)
	for _, c := range []*Conn{ca, cb} {
		for range 2 {
			for {
				w, ok := c.Send(context.Background())
				if ok {
					break
				}
				waitFor(nil, w)
			}
		}
	}
	relaytest.Eventually(t, "status of both nodes", func() bool {
		st, err := Status(context.Background(), a.js, set)
		return err == nil && st[0].Connections == 3 && st[0].Waiting == 7 && st[0].Rate == 4
	})
	st, _ := Status(context.Background(), a.js, set)
	out, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"name":"p"`, `"connections":3`, `"waiting":7`, `"suspended_until":null`,
		`"rate":"6000/m"`, `"effective_rate":"6000/m"`} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("status JSON %s lacks %s", out, want)
		}
	}
	a.s.SetWaiting(classP, 0)
	relaytest.Eventually(t, "a's waiting gone", func() bool {
		st, err := Status(context.Background(), a.js, set)
		return err == nil && st[0].Waiting == 4
	})
}

// Status and Resume before any node made the bucket.
func TestStatusWithoutBucket(t *testing.T) {
	t.Parallel()
	ns := startNATS(t)
	set := provider(Limits{Connections: 4})
	n := startNode(t, ns, "a", set)
	if err := n.js.DeleteKeyValue(context.Background(), Bucket); err != nil {
		t.Fatal(err)
	}
	st, err := Status(context.Background(), n.js, set)
	if err != nil || len(st) != 1 || st[0].Name != "p" || st[0].Connections != 0 {
		t.Fatalf("status: %+v, %v", st, err)
	}
	if err := Resume(context.Background(), n.js, "p"); err != ErrNotSuspended {
		t.Fatalf("resume: %v", err)
	}
}

// syncBuffer is a log sink safe for the shaper's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Without JetStream every decision fails open within about a second: the
// node keeps its own limits, logs once.
func TestFailOpenWithoutJetStream(t *testing.T) {
	t.Parallel()
	ns := startNATS(t)
	r := Rate{Count: 600, Per: time.Minute}
	set := provider(Limits{Connections: 2, Rate: r})
	logs := &syncBuffer{}
	a := startNodeLog(t, ns, "a", set, zerolog.New(zerolog.MultiLevelWriter(logs, zerolog.NewTestWriter(t))))
	held := connect(t, a, classP, "")
	ns.Shutdown()
	ns.WaitForShutdown()

	c := connect(t, a, classP, "")
	refused(t, a, classP, ReasonConnections) // this node's own connections still count
	checkPace(t, pump(t, []*Conn{c, held}, 10), r)
	a.s.Observe(classP, reply428)
	c.Release()
	held.Release()
	connect(t, a, classP, "").Release()
	if n := strings.Count(logs.String(), `"event":"shaping_kv_unavailable"`); n != 1 {
		t.Fatalf("%d shaping_kv_unavailable lines, want 1", n)
	}
}
