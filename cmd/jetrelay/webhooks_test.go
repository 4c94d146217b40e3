package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/webhooks"
)

// hookReceiver keeps the events of signed POSTs it answered 200.
type hookReceiver struct {
	secret []byte
	mu     sync.Mutex
	got    []webhooks.Payload
	bad    int
}

func (h *hookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	h.mu.Lock()
	defer h.mu.Unlock()
	var batch []webhooks.Payload
	if !webhooks.Verify(h.secret, r.Header.Get(webhooks.SignatureHeader), body) || json.Unmarshal(body, &batch) != nil {
		h.bad++
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	h.got = append(h.got, batch...)
}

func (h *hookReceiver) events() []webhooks.Payload {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]webhooks.Payload(nil), h.got...)
}

// newHookReceiver serves on loopback; the secret file holds its secret
// with a trailing newline, which is not part of it.
func newHookReceiver(t *testing.T) (*hookReceiver, string, string) {
	t.Helper()
	h := &hookReceiver{secret: []byte("whsec-test")}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	file := filepath.Join(t.TempDir(), "hook.secret")
	if err := os.WriteFile(file, append(h.secret, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	return h, srv.URL + "/hook", file
}

// SIGHUP adds a webhook (events reach it, /metrics counts them) and
// removes it again (its sender stops).
func TestReloadAddsAndRemovesWebhooks(t *testing.T) {
	e := newReloadEnv(t)
	rc, url, secretFile := newHookReceiver(t)
	next := e.next()
	next.Webhooks = []config.Webhook{{Name: "app", URL: url, Events: []string{"delivered"}, SecretFile: secretFile,
		Batch: config.WebhookBatch{Max: 10, Wait: config.Duration(100 * time.Millisecond)},
		Retry: config.WebhookRetry{MaxAge: config.Duration(time.Hour)}, Timeout: config.Duration(5 * time.Second)}}
	if st := e.r.reloadTo(next); st != reloadOK {
		t.Fatalf("reload: %s\n%s", st, e.logs.String())
	}
	queuetest.Eventually(t, time.Minute, "the webhook's consumer", func() bool {
		_, err := webhooks.Pending(context.Background(), e.r.q.JetStream(), "app")
		return err == nil
	})
	e.r.emitter.Emit(&events.Event{Event: events.Delivery, QueueID: "Q1", Rcpt: "a@dest.test",
		Status: events.StatusDelivered, SMTPCode: 250, Attempt: 1})
	e.r.emitter.Emit(&events.Event{Event: events.Delivery, QueueID: "Q2", Rcpt: "b@dest.test",
		Status: events.StatusDeferred, SMTPCode: 451, Attempt: 1})
	queuetest.Eventually(t, time.Minute, "the delivered event POSTed", func() bool { return len(rc.events()) >= 1 })
	if got := rc.events(); len(got) != 1 || got[0].QueueID != "Q1" || got[0].Event != "delivered" {
		t.Fatalf("POSTed %+v, want only Q1's delivered (deferred is not in events)", got)
	}
	queuetest.Eventually(t, time.Minute, "the sent counter", func() bool {
		fams, err := e.r.metrics.Registry().Gather()
		for _, f := range fams {
			if err == nil && f.GetName() == "jetrelay_webhook_events_sent_total" {
				return len(f.GetMetric()) == 1 && f.GetMetric()[0].GetCounter().GetValue() == 1
			}
		}
		return false
	})
	if st := e.r.reloadTo(e.next()); st != reloadOK {
		t.Fatalf("reload: %s", st)
	}
	if names := e.r.webhooks.Names(); len(names) != 0 {
		t.Fatalf("webhooks running after removal: %v", names)
	}
}

// webhooks test, ls and replay against a config naming a loopback
// receiver.
func TestWebhooksCommands(t *testing.T) {
	t.Parallel()
	o := newOpsEnv(t)
	rc, url, secretFile := newHookReceiver(t)
	yaml := fmt.Sprintf("hostname: relay.test\ndata_dir: %s\nwebhooks:\n  - {name: app, url: %q, secret_file: %s, "+
		"events: [failed, bounced], batch: {max: 2}}\n", o.dataDir, url, secretFile)
	if err := os.WriteFile(o.cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	if rc, out, errOut := runOps(t, webhooksTest, o.args("app")...); rc != 0 || !strings.Contains(out, "accepted") {
		t.Fatalf("webhooks test: rc %d: %s%s", rc, out, errOut)
	}
	if got := rc.events(); len(got) != 1 || got[0].Event != webhooks.TypeTest {
		t.Fatalf("test POST: %+v", got)
	}
	rcode, out, errOut := runOps(t, webhooksLs, o.args("--json")...)
	if rcode != 0 || !strings.Contains(out, `"name": "app"`) || !strings.Contains(out, `"pending": null`) {
		t.Fatalf("webhooks ls --json: rc %d: %s%s", rcode, out, errOut)
	}
	for i := range 3 {
		o.em.Emit(&events.Event{Event: events.Delivery, QueueID: fmt.Sprintf("Q%d", i), Status: events.StatusFailed,
			SMTPCode: 550, SMTPEnh: "5.1.1", Attempt: 1})
		o.em.Emit(&events.Event{Event: events.Accepted, QueueID: fmt.Sprintf("Q%d", i)})
	}
	o.em.Emit(&events.Event{Event: events.Bounced, QueueID: "Q9", Rcpt: "x@example.org"})
	queuetest.Eventually(t, time.Minute, "7 events stored", func() bool { return storedEvents(t, o) >= 7 })
	rcode, out, errOut = runOps(t, webhooksReplay, o.args("app", "--since", "1h")...)
	if rcode != 0 || !strings.Contains(out, "4 event(s) replayed") {
		t.Fatalf("webhooks replay: rc %d: %s%s", rcode, out, errOut)
	}
	got := rc.events()
	if len(got) != 5 || got[1].QueueID != "Q0" || got[4].Event != "bounced" || got[1].SMTPEnh != "5.1.1" {
		t.Fatalf("replayed %+v", got)
	}
	if rcode, _, _ := runOps(t, webhooksReplay, o.args("app")...); rcode != 2 {
		t.Fatalf("replay without --since: rc %d, want 2", rcode)
	}
	if rcode, _, errOut := runOps(t, webhooksTest, o.args("nope")...); rcode != 1 || !strings.Contains(errOut, "no webhook") {
		t.Fatalf("test of an unknown webhook: rc %d: %s", rcode, errOut)
	}
}

// storedEvents counts the events stream's messages.
func storedEvents(t *testing.T, o *opsEnv) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := o.q.JetStream().Stream(ctx, events.StreamName)
	if err != nil {
		return 0
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0
	}
	return info.State.Msgs
}
