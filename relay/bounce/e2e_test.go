package bounce

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/deliver"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/relaytest"
	"github.com/jetrelay/jetrelay/relay/smtpclient"
)

// e2eWait is the deadline for anything an end-to-end test waits for
// (-race on a loaded 2-core machine).
const e2eWait = 60 * time.Second

// world is the production wiring between fakes: a real JetStream queue, the
// delivery engine with the Bouncer as its Reporter, fake DNS, a fake MX for
// the recipients (example.org) and one for the original sender
// (example.com), where DSNs arrive.
type world struct {
	t        *testing.T
	q        *queue.Queue
	cfg      *config.Config
	b        *Bouncer
	rec      *relaytest.Events
	em       *events.Emitter
	rcptMX   *relaytest.MX
	senderMX *relaytest.MX
}

func newWorld(t *testing.T, mod func(*config.Config)) *world {
	t.Helper()
	w := &world{t: t, q: queuetest.RunJetStream(t), rec: &relaytest.Events{}}
	zone := relaytest.NewZone()
	dns := relaytest.FakeDNS(t, zone)
	w.rcptMX = relaytest.FakeMX(t)
	w.senderMX = relaytest.FakeMX(t, relaytest.Port(w.rcptMX.Port))
	zone.AddMX("example.org", 10, "mx.example.org")
	zone.AddA("mx.example.org", w.rcptMX.IP)
	zone.AddMX("example.com", 10, "mx.example.com")
	zone.AddA("mx.example.com", w.senderMX.IP)
	w.cfg = relaytest.Config(t, dns, w.rcptMX.Port)
	if mod != nil {
		mod(w.cfg)
	}
	log := relaytest.Logger(t)
	w.em = events.NewEmitter(log, w.rec)
	var err error
	ctx := context.Background()
	if w.b, err = New(ctx, Options{Settings: settingsOf(w.cfg), Queue: w.q, Events: w.em, Logger: log}); err != nil {
		t.Fatal(err)
	}
	res, err := smtpclient.NewResolver(smtpclient.DNSOptions{
		Servers: w.cfg.Delivery.DNS.Servers, Timeout: time.Second, LoopbackOnly: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	eng, err := deliver.New(deliver.Options{Settings: deliverSettings(w.cfg), Queue: w.q, Events: w.em,
		Logger: log, Reporter: w.b, Sender: w.b.VERPAddress, Resolver: res, Dialer: &relaytest.LoopbackDialer{}})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- eng.Run(runCtx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(e2eWait):
			t.Error("delivery engine did not stop")
		}
	})
	return w
}

const e2eBody = "From: App <app@example.com>\r\nTo: bob@example.org\r\nSubject: Your invoice\r\n" +
	"Message-ID: <inv-7@example.com>\r\n\r\nHello,\r\nyour invoice.\r\n"

// send enqueues e2eBody from app@example.com to rcpts at example.org.
func (w *world) send(rcpts []queue.Recipient, edit func(*queue.Envelope)) string {
	w.t.Helper()
	env := &queue.Envelope{From: "app@example.com", MsgID: "<inv-7@example.com>", Domain: "example.org",
		Rcpts: rcpts, Arrival: time.Now()}
	if edit != nil {
		edit(env)
	}
	m := &queue.Message{Body: []byte(e2eBody), Entries: []*queue.Envelope{env}}
	if err := w.q.Enqueue(context.Background(), m); err != nil {
		w.t.Fatal(err)
	}
	return m.ID
}

// dsnAt waits for the one DSN the sender's MX receives and parses it.
func (w *world) dsnAt() (relaytest.Message, dsn) {
	w.t.Helper()
	relaytest.Eventually(w.t, "a DSN at the sender's MX", func() bool { return len(w.senderMX.Messages()) > 0 })
	m := w.senderMX.Messages()[0]
	if m.From != "" || !cmp.Equal(m.Rcpts, []string{"app@example.com"}) {
		w.t.Errorf("DSN envelope MAIL FROM:<%s> RCPT %v, want <> and app@example.com", m.From, m.Rcpts)
	}
	return m, parseDSN(w.t, m.Body)
}

// waitEvent waits for an event of kind whose status and recipient match.
func (w *world) waitEvent(kind, status, rcpt string) events.Event {
	w.t.Helper()
	return w.rec.WaitFor(w.t, kind, func(e events.Event) bool {
		return e.Status == status && (rcpt == "" || e.Rcpt == rcpt)
	})
}

func rcpts(addrs ...string) []queue.Recipient {
	out := make([]queue.Recipient, len(addrs))
	for i, a := range addrs {
		out[i] = queue.Recipient{Addr: a}
	}
	return out
}

// TestE2ERcpt550MixedTransaction: bob gets 550 5.1.1 at RCPT, carol is
// accepted in the same transaction. One DSN reaches the sender's MX from
// <>, listing only bob, with his Status, Diagnostic-Code, Remote-MTA and
// the original headers; carol is delivered; bob is suppressed.
func TestE2ERcpt550MixedTransaction(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	w.rcptMX.ReplyRcpt("bob@example.org", relaytest.Err(550, "5.1.1", "<bob@example.org>: user unknown"), -1)
	rs := rcpts("bob@example.org", "carol@example.org")
	rs[0].ORCPT = "rfc822;bob@example.org"
	id := w.send(rs, nil)
	_, d := w.dsnAt()
	if len(d.rcpts) != 1 {
		t.Fatalf("%d recipient blocks, want only bob's", len(d.rcpts))
	}
	r := d.rcpts[0]
	for k, want := range map[string]string{
		"Final-Recipient": "rfc822; bob@example.org", "Original-Recipient": "rfc822;bob@example.org",
		"Action": "failed", "Status": "5.1.1", "Remote-Mta": "dns; mx.example.org",
		"Diagnostic-Code": "smtp; 550 5.1.1 <bob@example.org>: user unknown",
	} {
		if got := r.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	if want := e2eBody[:strings.Index(e2eBody, "\r\n\r\n")+2]; d.origType != "text/rfc822-headers" ||
		string(d.orig) != want {
		t.Errorf("returned %s %q, want the original headers", d.origType, d.orig)
	}
	if !strings.Contains(d.human, "550 5.1.1 <bob@example.org>: user unknown") {
		t.Errorf("human part does not quote the reply:\n%s", d.human)
	}
	if n := w.rcptMX.Received("carol@example.org"); n != 1 {
		t.Errorf("carol received %d copies, want 1", n)
	}
	if ev := w.waitEvent(events.DSN, "queued", ""); ev.QueueID != id || ev.DSNID == "" || ev.DSNID == id {
		t.Errorf("dsn event %+v: want queue_id %s and a new dsn_id", ev, id)
	}
	if _, ok, _ := w.b.Suppressed(context.Background(), "bob@example.org"); !ok {
		t.Error("bob not suppressed after 550 5.1.1")
	}
}

// TestE2ERetFull: RET=FULL returns the whole message as message/rfc822.
func TestE2ERetFull(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	w.rcptMX.ReplyRcpt("bob@example.org", relaytest.Err(550, "5.2.1", "mailbox disabled"), -1)
	w.send(rcpts("bob@example.org"), func(e *queue.Envelope) { e.Ret, e.EnvID = "FULL", "env-7" })
	_, d := w.dsnAt()
	if d.origType != "message/rfc822" || string(d.orig) != e2eBody {
		t.Errorf("returned %s %q, want the whole message", d.origType, d.orig)
	}
	if got := d.perMsg.Get("Original-Envelope-Id"); got != "env-7" {
		t.Errorf("Original-Envelope-Id %q, want env-7", got)
	}
	if _, ok, _ := w.b.Suppressed(context.Background(), "bob@example.org"); ok {
		t.Error("5.2.1 (mailbox status, not address) suppressed the recipient")
	}
}

// TestE2EMaxAgeExpiry: a recipient that only ever gets 451 fails at
// retry.max_age with Action: failed and its last temporary reply.
func TestE2EMaxAgeExpiry(t *testing.T) {
	t.Parallel()
	w := newWorld(t, func(c *config.Config) { c.Delivery.Retry.MaxAge = config.Duration(2 * time.Second) })
	w.rcptMX.ReplyRcpt("dave@example.org", relaytest.Err(451, "4.7.1", "greylisted, try again later"), -1)
	w.send(rcpts("dave@example.org"), nil)
	_, d := w.dsnAt()
	r := d.rcpts[0]
	if r.Get("Action") != "failed" || r.Get("Status") != "4.7.1" ||
		r.Get("Diagnostic-Code") != "smtp; 451 4.7.1 greylisted, try again later" {
		t.Errorf("recipient block %v, want failed 4.7.1 with the last reply", r)
	}
	if !strings.Contains(d.human, "still failing after 2s") {
		t.Errorf("human part does not explain the expiry:\n%s", d.human)
	}
}

// TestE2ENotifyNever: NOTIFY=NEVER produces nothing. The delivery event
// is emitted after the Reporter returned, so once it is seen any DSN
// would already be queued.
func TestE2ENotifyNever(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	w.rcptMX.ReplyRcpt("bob@example.org", relaytest.Err(550, "5.1.1", "user unknown"), -1)
	rs := rcpts("bob@example.org")
	rs[0].Notify = []string{"NEVER"}
	w.send(rs, nil)
	w.waitEvent(events.Delivery, events.StatusFailed, "bob@example.org")
	if evs := w.rec.Find(events.DSN, nil); len(evs) != 0 {
		t.Errorf("dsn events %+v, want none", evs)
	}
	if n := len(w.senderMX.Messages()); n != 0 {
		t.Errorf("%d messages at the sender's MX, want none", n)
	}
}

// TestE2EFailedDSNDropped: a DSN that itself fails is dropped and
// logged, never bounced.
func TestE2EFailedDSNDropped(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	w.rcptMX.ReplyRcpt("bob@example.org", relaytest.Err(550, "5.1.1", "user unknown"), -1)
	w.senderMX.ReplyRcpt("app@example.com", relaytest.Err(550, "5.1.1", "no such sender mailbox"), -1)
	w.send(rcpts("bob@example.org"), nil)
	queued := w.waitEvent(events.DSN, "queued", "")
	dropped := w.waitEvent(events.DSN, "dropped", "")
	if dropped.QueueID != queued.DSNID || !strings.Contains(dropped.Reason, "delivery status notification") {
		t.Errorf("dropped event %+v, want queue_id %s (the DSN) and the reason", dropped, queued.DSNID)
	}
	w.waitEvent(events.Delivery, events.StatusFailed, "app@example.com")
	if n := len(w.rec.Find(events.DSN, nil)); n != 2 {
		t.Errorf("%d dsn events, want queued + dropped", n)
	}
	if n := len(w.senderMX.Messages()); n != 0 {
		t.Errorf("%d messages accepted at the sender's MX, want none", n)
	}
}

// deliverSettings is what cmd/jetrelay builds from a configuration.
func deliverSettings(cfg *config.Config) deliver.Settings {
	return deliver.Settings{Delivery: cfg.Delivery, Hostname: cfg.Hostname, VERP: cfg.Bounces.VERPDomain != "",
		DelayNoticeAfter: cfg.Bounces.DelayNoticeAfter.D()}
}
