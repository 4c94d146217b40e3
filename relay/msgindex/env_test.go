package msgindex

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// env is an embedded JetStream with the events stream and an index.
type env struct {
	t  testing.TB
	js jetstream.JetStream
	x  *Index
}

func newEnv(t testing.TB, o Options) *env {
	t.Helper()
	q := queuetest.RunJetStream(t)
	js := q.JetStream()
	ctx := context.Background()
	if _, err := events.EnsureStream(ctx, js, events.StreamOptions{MaxAge: 24 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	if tt, ok := t.(*testing.T); ok {
		o.Log = zerolog.New(zerolog.NewTestWriter(tt))
	}
	x, err := Open(ctx, js, o)
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, js: js, x: x}
}

// run starts x's indexer until the test ends.
func (v *env) run(x *Index) {
	v.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = x.Run(ctx) }()
	v.t.Cleanup(func() { cancel(); wg.Wait() })
}

// publish stores events in the events stream, synchronously.
func (v *env) publish(evs ...*events.Event) {
	v.t.Helper()
	for _, e := range evs {
		data, err := json.Marshal(e)
		if err != nil {
			v.t.Fatal(err)
		}
		if _, err := v.js.Publish(context.Background(), events.Subject(e), data); err != nil {
			v.t.Fatal(err)
		}
	}
}

// waitFor polls Get until cond holds for the summary of id.
func (v *env) waitFor(id, what string, cond func(Summary) bool) Summary {
	v.t.Helper()
	var s Summary
	queuetest.Eventually(v.t, 30*time.Second, what, func() bool {
		var err error
		s, err = v.x.Get(context.Background(), id)
		return err == nil && cond(s)
	})
	return s
}

// search runs q and fails the test on an error.
func (v *env) search(q Query) Page {
	v.t.Helper()
	p, err := v.x.Search(context.Background(), q)
	if err != nil {
		v.t.Fatal(err)
	}
	return p
}

// idAt mints a queue id for time t (queue.NewID's layout).
func idAt(t time.Time, r *rand.Rand) string {
	b := []byte(idFloor(t))
	for i := idTimeChars; i < len(b); i++ {
		b[i] = crockford[r.IntN(len(crockford))]
	}
	return string(b)
}

func accepted(id string, at time.Time, from string, rcpts int) *events.Event {
	return &events.Event{Time: at, Event: events.Accepted, QueueID: id, MsgID: "<" + id + "@test>",
		User: "app", MailFrom: events.Str(from), RcptCount: rcpts, Size: 1234}
}

func delivery(id, rcpt, status string, at time.Time, attempt int) *events.Event {
	e := &events.Event{Time: at, Event: events.Delivery, QueueID: id, Rcpt: rcpt, Status: status,
		Attempt: attempt, MX: "mx.test", SMTPCode: 250, SMTPEnh: "2.0.0", Reply: "ok"}
	switch status {
	case events.StatusDeferred:
		e.SMTPCode, e.SMTPEnh, e.Reply = 451, "4.7.1", "try later"
	case events.StatusFailed:
		e.SMTPCode, e.SMTPEnh, e.Reply = 550, "5.1.1", "no such user"
	}
	return e
}
