package queue

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// fillLegacy writes a pre-issue-20 store: the work-queue stream
// JETRELAY_QUEUE with its delivery consumer, holding a ready entry, a
// deferred one (a schedule an hour out), a held one and a message with a
// chunked body. It returns each entry's subject and body.
func fillLegacy(t *testing.T, dir string, releaseOnly bool) map[string][]byte {
	t.Helper()
	q, err := Connect(mtCtx(t), Options{DataDir: dir, Logger: mtLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	return fillLegacyOn(t, q, releaseOnly)
}

// fillLegacyOn is fillLegacy on a connected queue (its replicas).
func fillLegacyOn(t *testing.T, q *Queue, releaseOnly bool) map[string][]byte {
	t.Helper()
	ctx := mtCtx(t)
	cfg := q.StreamConfig()
	cfg.Name, cfg.Retention = LegacyStreamName, jetstream.WorkQueuePolicy
	var s jetstream.Stream
	err := q.Await(ctx, "the legacy stream", func(ctx context.Context) (err error) {
		s, err = q.js.CreateStream(ctx, cfg)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateConsumer(ctx, q.consumerConfig()); err != nil {
		t.Fatal(err)
	}
	want := map[string][]byte{}
	put := func(msg *nats.Msg) {
		t.Helper()
		if _, err := q.js.PublishMsg(ctx, msg, jetstream.WithExpectStream(LegacyStreamName)); err != nil {
			t.Fatal(err)
		}
		want[msg.Subject] = msg.Data
	}
	entry := func(prefix, id, domain string, body []byte, chunks int) *nats.Msg {
		e := &Envelope{ID: id, Domain: domain, From: "app@example.com", Arrival: time.Now().UTC(),
			Rcpts: []Recipient{{Addr: "u@" + domain}}, Chunks: chunks, Size: int64(len(body))}
		data := body
		if chunks > 0 {
			data = nil
		}
		msg, err := q.entryMsg(Subject(prefix, id, domain), e, data)
		if err != nil {
			t.Fatal(err)
		}
		return msg
	}
	body := []byte("From: app@example.com\r\nSubject: t\r\n\r\nhi\r\n")
	put(entry(SubjReady, NewID(), "ready.example", body, 0))
	sched := entry(SubjScheduled, NewID(), "defer.example", body, 0)
	sched.Header.Set("Nats-Schedule", "@at "+time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	sched.Header.Set("Nats-Schedule-Target", "jr.q"+sched.Subject[len("jr.s"):])
	put(sched)
	put(entry(SubjHeld, NewID(), "hold.example", body, 0))
	id := NewID()
	big := bytes.Repeat([]byte("chunked body "), 1000)
	put(&nats.Msg{Subject: SubjBody + "." + id + ".0", Data: big})
	put(entry(SubjReady, id, "big.example", big, 1))
	if releaseOnly { // a start that was killed between the two steps
		if ok, err := q.releaseLegacy(ctx); err != nil || !ok {
			t.Fatalf("release: %v %v", ok, err)
		}
	}
	return want
}

// TestUpgradeFromWorkQueue: Open moves an old work-queue stream's entries,
// schedules, held entries and body chunks into the limits-retention
// stream, each once and unchanged, deletes the old stream, and the moved
// ready entries are delivered (leased) from the new one; also when the
// previous start was killed after releasing the old stream's subjects.
func TestUpgradeFromWorkQueue(t *testing.T) {
	t.Parallel()
	for _, releaseOnly := range []bool{false, true} {
		dir := t.TempDir()
		want := fillLegacy(t, dir, releaseOnly)
		ctx := mtCtx(t)
		q, err := Open(ctx, Options{DataDir: dir, Logger: mtLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(q.Close)
		if _, err := q.js.Stream(ctx, LegacyStreamName); !errors.Is(err, jetstream.ErrStreamNotFound) {
			t.Fatalf("legacy stream after the upgrade: %v", err)
		}
		s, err := q.Stream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info, _ := s.Info(ctx); info.State.Msgs != uint64(len(want)) || info.Config.Retention != jetstream.LimitsPolicy {
			t.Fatalf("new stream: %d messages (want %d), retention %v", info.State.Msgs, len(want), info.Config.Retention)
		}
		for subj, data := range want {
			m, err := s.GetLastMsgForSubject(ctx, subj)
			if err != nil || !bytes.Equal(m.Data, data) {
				t.Fatalf("%s after the upgrade: %v (data equal %v)", subj, err, err == nil && bytes.Equal(m.Data, data))
			}
			if subj[:4] == SubjScheduled && m.Header.Get("Nats-Schedule") == "" {
				t.Fatalf("%s lost its schedule", subj)
			}
		}
		es, err := q.Lease(ctx, 4)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for range 2 {
			e, err := es.Next()
			if err != nil {
				t.Fatal(err)
			}
			b, err := e.Body(ctx)
			if err != nil || !bytes.Equal(b, want[SubjBody+"."+e.Env.ID+".0"]) && !bytes.Equal(b, want[e.msg.Subject()]) {
				t.Fatalf("%s: body %v", e.Env.Domain, err)
			}
			if err := e.Done(ctx); err != nil {
				t.Fatal(err)
			}
			got = append(got, e.Env.Domain)
		}
		es.Stop()
		slices.Sort(got)
		if !slices.Equal(got, []string{"big.example", "ready.example"}) {
			t.Fatalf("leased %v", got)
		}
	}
}

// TestUpgradeClusterFromWorkQueue: a three-node cluster's replicated
// work-queue stream moves into the new stream when the three nodes of the
// new version start at the same moment (each runs the move): every entry,
// schedule, held entry and body chunk is there once and unchanged, with
// three replicas, and the old stream is gone.
func TestUpgradeClusterFromWorkQueue(t *testing.T) {
	ports := clusterPorts(t, 3)
	log := &clusterLog{}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	opts := make([]Options, len(ports))
	for i := range opts {
		opts[i] = clusterNode(t, i, ports, "route-secret", log)
	}
	// The older version's cluster: connected, its legacy stream filled.
	old := make([]*Queue, len(opts))
	errs := make(chan error, len(opts))
	for i, o := range opts {
		go func() {
			var err error
			old[i], err = Connect(ctx, o)
			errs <- err
		}()
	}
	for range opts {
		if err := <-errs; err != nil {
			t.Fatalf("connect: %v\nlog:\n%s", err, log.String())
		}
	}
	want := fillLegacyOn(t, old[0], false)
	for _, q := range old {
		q.Close()
	}
	// The new version on all three at once.
	var starts []<-chan clusterOpenResult
	for _, o := range opts {
		starts = append(starts, clusterOpenAsync(t, ctx, o))
	}
	var qs []*Queue
	t.Cleanup(func() {
		for _, q := range qs {
			q.Close()
		}
	})
	for i, ch := range starts {
		r := <-ch
		if r.err != nil {
			t.Fatalf("node %d: Open: %v\nlog:\n%s", i, r.err, log.String())
		}
		qs = append(qs, r.q)
	}
	q := qs[0]
	if _, err := q.js.Stream(ctx, LegacyStreamName); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("legacy stream after the upgrade: %v", err)
	}
	s, err := q.Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != uint64(len(want)) || info.Config.Replicas != 3 || info.Config.Retention != jetstream.LimitsPolicy {
		t.Fatalf("new stream: %d messages (want %d, each once), %d replicas, retention %v",
			info.State.Msgs, len(want), info.Config.Replicas, info.Config.Retention)
	}
	for subj, data := range want {
		m, err := s.GetLastMsgForSubject(ctx, subj)
		if err != nil || !bytes.Equal(m.Data, data) {
			t.Fatalf("%s after the upgrade: %v (data equal %v)", subj, err, err == nil && bytes.Equal(m.Data, data))
		}
	}
}
