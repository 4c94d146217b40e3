package queue_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
)

// testMessage is a message to domains (one entry each: inline for one
// domain, an atomic batch of a body chunk and the entries for more).
func testMessage(domains ...string) *queue.Message {
	m := &queue.Message{ID: queue.NewID(), Body: []byte("From: a@example.com\r\nSubject: t\r\n\r\nhi\r\n")}
	for _, d := range domains {
		m.Entries = append(m.Entries, env(d, "x@"+d))
	}
	return m
}

// partSubjects lists the stream subjects a message stored as m takes.
func partSubjects(m *queue.Message) []string {
	var out []string
	if len(m.Entries) > 1 {
		out = append(out, queue.SubjBody+"."+m.ID+".0")
	}
	for _, e := range m.Entries {
		out = append(out, queue.Subject(queue.SubjReady, m.ID, e.Domain))
	}
	return out
}

// subjectCounts returns how many messages the queue stream holds per subject.
func subjectCounts(t testing.TB, q *queue.Queue) map[string]uint64 {
	t.Helper()
	return queuetest.StreamInfo(t, q, "jr.>").State.Subjects
}

// checkStoredOnce fails unless every part of m is stored exactly once.
func checkStoredOnce(t testing.TB, counts map[string]uint64, m *queue.Message) {
	t.Helper()
	for _, s := range partSubjects(m) {
		if n := counts[s]; n != 1 {
			t.Errorf("%s stored %d times, want once", s, n)
		}
	}
}

// TestEnqueueSameIDStoredOnce: every part carries a Nats-Msg-Id, so
// publishing a message again — what a retry after a lost ack does — is
// answered as stored (a duplicate PubAck for one message, error 10201 for
// an atomic batch) and stores nothing twice.
func TestEnqueueSameIDStoredOnce(t *testing.T) {
	t.Parallel()
	q := queuetest.RunJetStream(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		domains []string
	}{
		{"single publish", []string{"one.test"}},
		{"atomic batch", []string{"one.test", "two.test", "three.test"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := testMessage(tc.domains...)
			if err := q.Enqueue(ctx, m); err != nil {
				t.Fatal(err)
			}
			again := &queue.Message{ID: m.ID, Body: m.Body, Entries: m.Entries}
			if err := q.Enqueue(ctx, again); err != nil {
				t.Fatalf("enqueue again under the same id: %v, want it reported stored", err)
			}
			checkStoredOnce(t, subjectCounts(t, q), m)
		})
	}
	info := queuetest.StreamInfo(t, q, "")
	if w := info.Config.Duplicates; w != queue.DuplicateWindow || w < 2*queue.DefaultPublishBudget {
		t.Fatalf("stream duplicate window %s: must be %s and cover the publish budget %s",
			w, queue.DuplicateWindow, queue.DefaultPublishBudget)
	}
}

// TestEnqueueLostAckStoredOnce: the server stores the publish but its ack
// never reaches the client (the connection dies after the store); Enqueue
// retries after its attempt timeout over the new connection, the server
// answers "duplicate", and the message is stored once — not twice, as
// acks lost in a failover used to make it.
func TestEnqueueLostAckStoredOnce(t *testing.T) {
	t.Parallel()
	ns := queuetest.StartNATS(t, &server.Options{ServerName: "solo", StoreDir: t.TempDir()})
	for _, tc := range []struct {
		name    string
		domains []string
	}{
		{"single publish", []string{"one.test"}},
		{"atomic batch", []string{"one.test", "two.test"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startProxy(t, ns.Addr().String())
			logs := &syncBuffer{}
			q := queuetest.OpenQueue(t, p.url(), 1, testLog(t, logs),
				queue.PublishOptions{Attempt: time.Second, Budget: nodeWait})
			direct := queuetest.OpenQueue(t, ns.ClientURL(), 1, zerolog.New(zerolog.NewTestWriter(t)), queue.PublishOptions{})
			m := testMessage(tc.domains...)
			p.losing.Store(true)
			done := make(chan error, 1)
			go func() { done <- q.Enqueue(context.Background(), m) }()
			queuetest.Eventually(t, nodeWait, "the publish stored", func() bool {
				return subjectCounts(t, direct)[partSubjects(m)[len(partSubjects(m))-1]] > 0
			})
			p.cut() // the ack is lost with the connection
			p.losing.Store(false)
			if err := <-done; err != nil {
				t.Fatalf("enqueue after a lost ack: %v", err)
			}
			checkStoredOnce(t, subjectCounts(t, direct), m)
			if !strings.Contains(logs.String(), `"duplicate":true`) {
				t.Fatalf("no retry answered as a duplicate in the log:\n%s", logs)
			}
		})
	}
}

// TestEnqueueUnavailable: with the server gone, Enqueue gives up within
// its budget with ErrNotStored (no hang), and when the server is back the
// refused message is not in the stream while the earlier one is.
func TestEnqueueUnavailable(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ns := queuetest.StartNATS(t, &server.Options{ServerName: "solo", StoreDir: dir})
	budget := 1500 * time.Millisecond
	q := queuetest.OpenQueue(t, ns.ClientURL(), 1, zerolog.New(zerolog.NewTestWriter(t)),
		queue.PublishOptions{Attempt: 500 * time.Millisecond, Budget: budget})
	before := testMessage("one.test", "two.test")
	if err := q.Enqueue(context.Background(), before); err != nil {
		t.Fatal(err)
	}
	ns.Shutdown()
	ns.WaitForShutdown()
	for _, m := range []*queue.Message{testMessage("one.test"), testMessage("one.test", "two.test")} {
		start := time.Now()
		err := q.Enqueue(context.Background(), m)
		took := time.Since(start)
		t.Logf("enqueue with the server down: %v after %s", err, took)
		if !errors.Is(err, queue.ErrNotStored) {
			t.Fatalf("enqueue with the server down: %v, want ErrNotStored", err)
		}
		if took > budget+nodeWait/2 { // a bound, not a speed target: it used to wait a minute
			t.Fatalf("enqueue took %s with a budget of %s", took, budget)
		}
	}
	q.Close()
	ns2 := queuetest.StartNATS(t, &server.Options{ServerName: "solo", StoreDir: dir})
	q2 := queuetest.OpenQueue(t, ns2.ClientURL(), 1, zerolog.New(zerolog.NewTestWriter(t)), queue.PublishOptions{})
	counts := subjectCounts(t, q2)
	checkStoredOnce(t, counts, before)
	if n := len(counts); n != len(partSubjects(before)) {
		t.Fatalf("stream holds %v; want only the message stored before the server went", counts)
	}
}

// enqueueResult is one Enqueue of the failover test.
type enqueueResult struct {
	m     *queue.Message
	err   error
	start time.Time
	took  time.Duration
}

// TestEnqueueStreamLeaderLost: three nodes, the queue stream at R3, mail
// flowing through a node that survives while the stream's leader is shut
// down. Every Enqueue returns within its budget; what it reported stored
// is stored once, what it refused is stored at most once (a commit the
// old leader proposed may still be applied), nothing is stored twice, and
// enqueues succeed again once a new leader is elected.
func TestEnqueueStreamLeaderLost(t *testing.T) {
	t.Parallel()
	c := queuetest.StartCluster(t)
	log := zerolog.New(zerolog.NewTestWriter(t))
	setup := queuetest.OpenQueue(t, c.Nodes[0].ClientURL(), 3, log, queue.PublishOptions{})
	leader := streamLeader(t, setup)
	var via *server.Server
	for _, ns := range c.Nodes {
		if ns.Name() != leader {
			via = ns
			break
		}
	}
	q := queuetest.OpenQueue(t, via.ClientURL(), 3, log, queue.PublishOptions{})
	results := make(chan enqueueResult, 1024)
	stop := make(chan struct{})
	done := make(chan struct{})
	const publishers = 3
	for i := range publishers {
		go func() {
			defer func() { done <- struct{}{} }()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				m := testMessage("one.test")
				if (n+i)%2 == 1 {
					m = testMessage("one.test", "two.test")
				}
				start := time.Now()
				err := q.Enqueue(context.Background(), m)
				results <- enqueueResult{m: m, err: err, start: start, took: time.Since(start)}
			}
		}()
	}
	var all []enqueueResult
	collect := func(what string, until func() bool) {
		t.Helper()
		deadline := time.After(2 * nodeWait)
		for !until() {
			select {
			case r := <-results:
				all = append(all, r)
			case <-deadline:
				t.Fatalf("timed out waiting for %s (%d enqueues)", what, len(all))
			}
		}
	}
	collect("enqueues before the kill", func() bool { return okSince(all, time.Time{}) >= 20 })
	killed := time.Now()
	c.Node(leader).Shutdown()
	collect("enqueues after the kill", func() bool { return okSince(all, killed) >= 20 })
	close(stop)
	for range publishers {
	drain:
		for {
			select {
			case r := <-results:
				all = append(all, r)
			case <-done:
				break drain
			}
		}
	}
	for len(results) > 0 {
		all = append(all, <-results)
	}
	checkFailover(t, q, all, killed)
}

// okSince counts the enqueues that succeeded and started after t.
func okSince(rs []enqueueResult, t time.Time) int {
	n := 0
	for _, r := range rs {
		if r.err == nil && r.start.After(t) {
			n++
		}
	}
	return n
}

func streamLeader(t testing.TB, q *queue.Queue) string {
	t.Helper()
	var leader string
	queuetest.Eventually(t, nodeWait, "a queue stream leader", func() bool {
		info := queuetest.StreamInfo(t, q, "")
		if info.Cluster != nil {
			leader = info.Cluster.Leader
		}
		return leader != ""
	})
	return leader
}

// checkFailover checks the failover test's results against the stream.
func checkFailover(t *testing.T, q *queue.Queue, all []enqueueResult, killed time.Time) {
	t.Helper()
	counts := subjectCounts(t, q)
	var refused, retried int
	firstOK := time.Duration(-1)
	for _, r := range all {
		if r.took > queue.DefaultPublishBudget+nodeWait/2 { // a bound, not a speed target
			t.Errorf("enqueue %s took %s, beyond its budget", r.m.ID, r.took)
		}
		if r.took > queue.DefaultPublishAttempt {
			retried++
		}
		if r.err == nil {
			checkStoredOnce(t, counts, r.m)
			if d := r.start.Add(r.took).Sub(killed); r.start.After(killed) && (firstOK < 0 || d < firstOK) {
				firstOK = d
			}
			continue
		}
		refused++
		if !errors.Is(r.err, queue.ErrNotStored) {
			t.Errorf("enqueue %s: %v, want ErrNotStored", r.m.ID, r.err)
		}
		var stored []string
		for _, s := range partSubjects(r.m) {
			if counts[s] > 0 {
				stored = append(stored, fmt.Sprintf("%s×%d", s, counts[s]))
			}
		}
		if len(stored) > 0 && len(stored) != len(partSubjects(r.m)) {
			t.Errorf("refused message %s partly stored: %v", r.m.ID, stored)
		}
		if len(stored) > 0 {
			t.Logf("refused message %s was stored after all (once): %v", r.m.ID, stored)
		}
	}
	for s, n := range counts {
		if n > 1 {
			t.Errorf("%s stored %d times", s, n)
		}
	}
	t.Logf("%d enqueues: %d refused, %d took longer than one attempt; first success after the kill %s",
		len(all), refused, retried, firstOK)
}

// TestEnqueueNoQuorum: with two of three nodes gone the stream cannot
// commit, so Enqueue never reports a message stored: it gives up with
// ErrNotStored within its budget. When the nodes return, the same queue
// (no restart) stores again, and nothing is stored twice.
func TestEnqueueNoQuorum(t *testing.T) {
	t.Parallel()
	c := queuetest.StartCluster(t)
	log := zerolog.New(zerolog.NewTestWriter(t))
	q := queuetest.OpenQueue(t, c.Nodes[0].ClientURL(), 3, log,
		queue.PublishOptions{Attempt: 500 * time.Millisecond, Budget: 2 * time.Second})
	ctx := context.Background()
	before := testMessage("one.test", "two.test")
	if err := q.Enqueue(ctx, before); err != nil {
		t.Fatal(err)
	}
	gone := []string{c.Nodes[1].Name(), c.Nodes[2].Name()}
	for _, name := range gone {
		c.Node(name).Shutdown()
	}
	var refused []*queue.Message
	for _, m := range []*queue.Message{testMessage("one.test"), testMessage("one.test", "two.test")} {
		err := q.Enqueue(ctx, m)
		if !errors.Is(err, queue.ErrNotStored) {
			t.Fatalf("enqueue without quorum: %v, want ErrNotStored", err)
		}
		refused = append(refused, m)
	}
	for _, name := range gone {
		c.Restart(t, name)
	}
	back := time.Now()
	after := testMessage("one.test", "two.test")
	queuetest.Eventually(t, 2*nodeWait, "an enqueue stored after quorum returned", func() bool {
		err := q.Enqueue(ctx, after)
		if err != nil && !errors.Is(err, queue.ErrNotStored) {
			t.Fatalf("enqueue after quorum returned: %v", err)
		}
		return err == nil
	})
	t.Logf("stored again %s after the nodes were restarted", time.Since(back).Round(time.Millisecond))
	counts := subjectCounts(t, q)
	checkStoredOnce(t, counts, before)
	checkStoredOnce(t, counts, after)
	for _, m := range refused {
		for _, s := range partSubjects(m) {
			if counts[s] > 1 {
				t.Errorf("refused %s stored %d times", s, counts[s])
			} else if counts[s] == 1 {
				t.Logf("refused message %s stored after all, once (%s): its commit was proposed before", m.ID, s)
			}
		}
	}
}

// TestEnqueueAfterHalfSentBatch: a half-sent batch left on the server
// under the id the first attempt uses (what an attempt cut off mid-batch
// leaves) makes the server refuse that attempt as incomplete; the next
// attempt, under a fresh batch id, stores the message once, and the
// leftover is never stored.
func TestEnqueueAfterHalfSentBatch(t *testing.T) {
	t.Parallel()
	ns := queuetest.StartNATS(t, &server.Options{ServerName: "solo", StoreDir: t.TempDir()})
	logs := &syncBuffer{}
	q := queuetest.OpenQueue(t, ns.ClientURL(), 1, testLog(t, logs), queue.PublishOptions{})
	m := testMessage("one.test", "two.test")
	half := &nats.Msg{Subject: queue.SubjBody + "." + m.ID + ".0", Data: []byte("left over"), Header: nats.Header{}}
	half.Header.Set("Nats-Batch-Id", m.ID+"-1")
	half.Header.Set("Nats-Batch-Sequence", "1")
	if err := q.Conn().PublishMsg(half); err != nil {
		t.Fatal(err)
	}
	if err := q.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	if err := q.Enqueue(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	counts := subjectCounts(t, q)
	checkStoredOnce(t, counts, m)
	if !strings.Contains(logs.String(), `"event":"enqueue_retried"`) {
		t.Fatalf("the first attempt was not refused; log:\n%s", logs)
	}
	s, err := q.Stream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	chunk, err := s.GetLastMsgForSubject(context.Background(), queue.SubjBody+"."+m.ID+".0")
	if err != nil || string(chunk.Data) != string(m.Body) {
		t.Fatalf("body chunk %v, %v: want the message's own", chunk, err)
	}
}
