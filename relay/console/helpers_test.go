package console_test

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/jetrelay/jetrelay/relay/bounce"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/console"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/msgindex"
	"github.com/jetrelay/jetrelay/relay/relaytest"
	"github.com/jetrelay/jetrelay/relay/stats"
	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"
)

// Test logins.
const (
	viewer, viewerPass     = "vic", "viewer-pass"
	operator, operatorPass = "olga", "operator-pass"
)

// env is a console on real components: an embedded JetStream queue, the
// events stream written through the events publisher, the message index
// and the stats aggregator running, and the suppression list.
type env struct {
	q      *queue.Queue
	em     *events.Emitter
	supp   *bounce.SuppressionList
	con    *console.Console
	srv    *httptest.Server
	events *relaytest.Events // every event emitted (also published)
}

func hash(t testing.TB, pass string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

func newEnv(t testing.TB) *env {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	log := zerolog.New(zerolog.NewTestWriter(t))
	q := queuetest.RunJetStream(t)
	js := q.JetStream()
	if _, err := events.EnsureStream(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	pub, err := events.NewPublisher(events.PublisherOptions{Conn: q.Conn(), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer ccancel()
		_ = pub.Close(cctx)
	})
	rec := &relaytest.Events{}
	em := events.NewEmitter(log, events.Tee(rec, pub))
	cfg := config.Default()
	cfg.Hostname, cfg.DataDir, cfg.Bounces.From = "relay.test", t.TempDir(), "MAILER-DAEMON@relay.test"
	set := bounce.Settings{Bounces: cfg.Bounces, Hostname: cfg.Hostname, From: cfg.BouncesFrom(), DataDir: cfg.DataDir,
		MaxAge: cfg.Delivery.Retry.MaxAge.D()}
	b, err := bounce.New(ctx, bounce.Options{Settings: set, Queue: q, Events: em, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	idx, err := msgindex.Open(ctx, js, msgindex.Options{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	st, err := stats.Open(ctx, js, stats.Options{Log: log, Interval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{}, 2)
	go func() { _ = idx.Run(ctx); done <- struct{}{} }()
	go func() { _ = st.Run(ctx); done <- struct{}{} }()
	t.Cleanup(func() { cancel(); <-done; <-done })
	con, err := console.Open(ctx, console.Options{
		Users: []console.User{{Name: viewer, PasswordHash: hash(t, viewerPass), Role: console.RoleViewer},
			{Name: operator, PasswordHash: hash(t, operatorPass), Role: console.RoleOperator}},
		JetStream: js, Queue: q, Events: em, Bouncer: b, Suppressions: b.Suppressions(), Index: idx, Stats: st,
		MaxStreams: 2, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(con.Handler())
	t.Cleanup(srv.Close)
	t.Cleanup(con.Shutdown)
	return &env{q: q, em: em, supp: b.Suppressions(), con: con, srv: srv, events: rec}
}

// client is an HTTP client that keeps cookies and does not follow
// redirects (tests look at them).
func (e *env) client(t testing.TB) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// login logs name in and returns its client.
func (e *env) login(t testing.TB, name, pass string) *http.Client {
	t.Helper()
	c := e.client(t)
	resp := e.post(t, c, "/console/login", url.Values{"name": {name}, "password": {pass}})
	if resp.code != http.StatusSeeOther || resp.header.Get("Location") != "/console/" {
		t.Fatalf("login %s: %d %s\n%s", name, resp.code, resp.header.Get("Location"), resp.body)
	}
	return c
}

// response is a read response.
type response struct {
	code   int
	header http.Header
	body   string
}

func (e *env) get(t testing.TB, c *http.Client, path string) response {
	t.Helper()
	resp, err := c.Get(e.srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	return read(t, resp)
}

func (e *env) post(t testing.TB, c *http.Client, path string, form url.Values) response {
	t.Helper()
	resp, err := c.PostForm(e.srv.URL+path, form)
	if err != nil {
		t.Fatal(err)
	}
	return read(t, resp)
}

func read(t testing.TB, resp *http.Response) response {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{code: resp.StatusCode, header: resp.Header, body: string(b)}
}

var csrfRe = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf reads the session's CSRF token from a page.
func (e *env) csrf(t testing.TB, c *http.Client) string {
	t.Helper()
	m := csrfRe.FindStringSubmatch(e.get(t, c, "/console/queue").body)
	if m == nil {
		t.Fatal("no csrf field on the queue page")
	}
	return m[1]
}

// enqueue stores a message to rcpt (with subject) and emits its accepted
// event, as submission does.
func (e *env) enqueue(t testing.TB, rcpt, subject string) *queue.Envelope {
	t.Helper()
	domain := rcpt[strings.LastIndexByte(rcpt, '@')+1:]
	env := &queue.Envelope{From: "app@sender.test", Domain: domain, Arrival: time.Now(),
		MsgID: "<m-" + domain + "@sender.test>", Rcpts: []queue.Recipient{{Addr: rcpt}}, User: "app",
		Meta: map[string]string{"order": "42"}}
	body := "From: app@sender.test\r\nTo: " + rcpt + "\r\nSubject: " + subject + "\r\nMessage-ID: " + env.MsgID +
		"\r\n\r\nhi\r\n"
	m := &queue.Message{Body: []byte(body), Entries: []*queue.Envelope{env}}
	if err := e.q.Enqueue(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	e.em.Emit(&events.Event{Event: events.Accepted, QueueID: m.ID, MsgID: env.MsgID, User: "app",
		MailFrom: events.Str(env.From), RcptCount: 1, Size: int64(len(body)), Meta: env.Meta})
	return env
}

// deferOne leases the only ready entry and defers it for an hour with a
// remote reply, emitting the delivery event as delivery does.
func (e *env) deferOne(t testing.TB, reply string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	es, err := e.q.Lease(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	ent, err := es.Next()
	if err != nil {
		t.Fatal(err)
	}
	env := *ent.Env
	env.Attempt = 1
	env.LastReply = queue.Reply{Code: 451, Enh: "4.7.1", Text: reply, MX: "mx." + env.Domain}
	next := time.Now().Add(time.Hour)
	if err := ent.Defer(ctx, &env, next); err != nil {
		t.Fatal(err)
	}
	es.Stop()
	e.em.Emit(&events.Event{Event: events.Delivery, QueueID: env.ID, Rcpt: env.Rcpts[0].Addr, Domain: env.Domain,
		MX: "mx." + env.Domain, Status: events.StatusDeferred, SMTPCode: 451, SMTPEnh: "4.7.1", Reply: reply,
		Attempt: 1, NextAttempt: &next, TLS: "TLS1.3", TLSPolicy: "opportunistic", User: "app"})
	s, _ := e.q.Stream(ctx)
	c, _ := s.Consumer(ctx, queue.ConsumerName)
	relaytest.Eventually(t, "no waiting pulls", func() bool {
		info, err := c.Info(ctx)
		return err == nil && info.NumWaiting == 0
	})
}

// finish emits a final delivery event for id (the entry itself is not
// touched: tests of finished messages look at their history).
func (e *env) finish(id, rcpt, status string, code int, enh, reply string) {
	domain := rcpt[strings.LastIndexByte(rcpt, '@')+1:]
	e.em.Emit(&events.Event{Event: events.Delivery, QueueID: id, Rcpt: rcpt, Domain: domain, MX: "mx." + domain,
		IP: "127.0.0.1", Status: status, SMTPCode: code, SMTPEnh: enh, Reply: reply, Attempt: 1, TLS: "TLS1.3",
		TLSCipher: "TLS_AES_128_GCM_SHA256", TLSPolicy: "opportunistic", TLSVerified: events.Bool(true), User: "app"})
}

// indexed waits until the index has id with status.
func (e *env) indexed(t testing.TB, c *http.Client, query, want string) {
	t.Helper()
	relaytest.Eventually(t, "search "+query+" finds "+want, func() bool {
		return strings.Contains(e.get(t, c, "/console/messages?"+query).body, want)
	})
}

// settleOne leases the only ready entry, emits its final delivery event
// (and, for a failure, the DSN event) and acknowledges it, as delivery
// does; it returns the queue id.
func (e *env) settleOne(t testing.TB, status string, code int, enh, reply string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	es, err := e.q.Lease(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer es.Stop()
	ent, err := es.Next()
	if err != nil {
		t.Fatal(err)
	}
	env := ent.Env
	e.finish(env.ID, env.Rcpts[0].Addr, status, code, enh, reply)
	if status == events.StatusFailed {
		e.em.Emit(&events.Event{Event: events.DSN, QueueID: env.ID, DSNID: queue.NewID(), Rcpt: env.Rcpts[0].Addr,
			MailFrom: events.Str(env.From), Reason: "failure", User: "app"})
	}
	if err := ent.Done(ctx); err != nil {
		t.Fatal(err)
	}
	return env.ID
}

// parkOne leases the only ready entry and parks it with a remote reply,
// as delivery does for a failing destination, its wake-up in an hour.
func (e *env) parkOne(t testing.TB, reply string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	es, err := e.q.Lease(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer es.Stop()
	ent, err := es.Next()
	if err != nil {
		t.Fatal(err)
	}
	env := *ent.Env
	env.Attempt = 11
	env.LastReply = queue.Reply{Code: 421, Enh: "4.4.2", Text: reply, MX: "mx." + env.Domain}
	if err := ent.Park(ctx, &env, time.Now().Add(24*time.Hour), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
}
