package guard_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/smtp"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/guard"
	"github.com/jetrelay/jetrelay/relay/relaytest"
	"github.com/jetrelay/jetrelay/relay/stats"
	"github.com/jetrelay/jetrelay/relay/submit"
	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"
)

const shopPass = "shop-secret"

// node is one relay's aggregator and guard on a shared JetStream.
type node struct {
	store *stats.Store
	guard *guard.Guard
}

func startNode(t *testing.T, q *queue.Queue, em *events.Emitter, rules map[string]guard.Rule) *node {
	t.Helper()
	log := zerolog.New(zerolog.NewTestWriter(t))
	n := &node{}
	var err error
	n.store, err = stats.Open(context.Background(), q.JetStream(), stats.Options{Interval: 20 * time.Millisecond,
		Log: log, AfterFlush: func(ctx context.Context, users []string) { n.guard.Evaluate(ctx, users) }})
	if err != nil {
		t.Fatal(err)
	}
	n.guard, err = guard.Open(context.Background(), guard.Options{JetStream: q.JetStream(), Stats: n.store,
		Events: em, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	n.guard.SetRules(rules)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = n.store.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait(); n.guard.Close() })
	return n
}

// listed is a suppression list of one address.
type listed string

func (l listed) Suppressed(_ context.Context, addr string) (time.Time, bool, error) {
	return time.Now(), strings.EqualFold(addr, string(l)), nil
}

// startSubmit runs a submission server with user shop whose MAIL asks p.
func startSubmit(t *testing.T, q *queue.Queue, em *events.Emitter, p submit.Pauses) (string, *tls.Config) {
	t.Helper()
	cfg := config.Default()
	cfg.Dev, cfg.Hostname, cfg.DataDir = false, "relay.test", t.TempDir()
	cfg.Submission.Listeners = []config.Listener{{Addr: "127.0.0.1:0", TLS: "starttls"}}
	h, err := bcrypt.GenerateFromPassword([]byte(shopPass), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Submission.Users = []config.User{{Name: "shop", PasswordHash: string(h), AllowedFrom: []string{"example.com"}}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	brake, err := submit.OpenBrake(context.Background(), submit.BrakeOptions{JetStream: q.JetStream()})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := submit.New(submit.Options{Settings: submit.Settings{Hostname: cfg.Hostname, DataDir: cfg.DataDir,
		Submission: cfg.Submission}, Queue: q, Events: em, Logger: zerolog.New(zerolog.NewTestWriter(t)),
		Brake: brake, Suppressor: listed("gone@example.net")})
	if err != nil {
		t.Fatal(err)
	}
	srv.SetPauses(p)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	pemBytes, err := os.ReadFile(filepath.Join(cfg.DataDir, "tls", "cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemBytes)
	return srv.Addrs()[0].String(), &tls.Config{RootCAs: pool, ServerName: "localhost"}
}

// mail logs in as shop and says MAIL FROM; it returns the refusal, if
// any, after RSET and QUIT. With rcpts it sends a message to them.
func mail(t *testing.T, addr string, tc *tls.Config, rcpts ...string) error {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := smtp.NewClient(conn, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.StartTLS(tc); err != nil {
		t.Fatal(err)
	}
	if err := c.Auth(smtp.PlainAuth("", "shop", shopPass, "localhost")); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("app@example.com"); err != nil {
		return err
	}
	for _, r := range rcpts {
		_ = c.Rcpt(r) // a suppressed one is refused; the others are sent to
	}
	if len(rcpts) > 0 {
		w, err := c.Data()
		if err != nil {
			t.Fatal(err)
		}
		_, _ = w.Write([]byte("From: app@example.com\r\nSubject: hi\r\n\r\nhi\r\n"))
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return c.Quit()
}

func outcome(user, rcpt, status string, code int) *events.Event {
	return &events.Event{Event: events.Delivery, User: user, Rcpt: rcpt, Domain: "example.net", Status: status,
		SMTPCode: code, QueueID: "Q" + rcpt}
}

// TestGuardPausesAndResumeLifts: two nodes count a user's outcomes; past
// warn one warning is published, past pause one paused event, and a real
// submission gets 451 4.7.1 at MAIL; resume lifts it and starts a new
// window whose counts begin at zero.
func TestGuardPausesAndResumeLifts(t *testing.T) {
	q := queuetest.RunJetStream(t)
	ctx := context.Background()
	if _, err := events.EnsureStream(ctx, q.JetStream(), events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	pub, err := events.NewPublisher(events.PublisherOptions{Conn: q.Conn(), Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Start(ctx); err != nil {
		t.Fatal(err)
	}
	rec := &relaytest.Events{}
	em := events.NewEmitter(zerolog.New(zerolog.NewTestWriter(t)), events.Tee(rec, pub))
	rules := map[string]guard.Rule{"shop": {Warn: 0.05, Pause: 0.10, Window: time.Hour, MinVolume: 20}}
	a := startNode(t, q, em, rules)
	b := startNode(t, q, em, rules)
	addr, tc := startSubmit(t, q, em, a.guard)

	// A real submission counts its recipients; the suppressed one is refused and counted.
	if err := mail(t, addr, tc, "x@example.net", "gone@example.net"); err != nil {
		t.Fatalf("submission before any bounce: %v", err)
	}
	since := time.Now().Add(-time.Hour)
	relaytest.Eventually(t, "accepted and suppressed counted", func() bool {
		c, err := a.store.Totals(ctx, stats.Query{User: "shop", Since: since})
		return err == nil && c.Accepted == 1 && c.Suppressed == 1
	})

	// 19 delivered + 1 hard bounce: 5% at the minimum volume: a warning only.
	for i := range 19 {
		em.Emit(outcome("shop", "d"+strings.Repeat("x", i)+"@example.net", events.StatusDelivered, 250))
	}
	em.Emit(outcome("shop", "b1@example.net", events.StatusFailed, 550))
	rec.WaitFor(t, events.BounceRateWarning, func(e events.Event) bool { return e.User == "shop" })
	if _, paused := a.guard.Paused("shop"); paused {
		t.Fatal("paused at 5%")
	}
	if err := mail(t, addr, tc); err != nil {
		t.Fatalf("MAIL after a warning: %v", err)
	}

	// Two more hard bounces: 3 of 22 = 13.6%: paused on every node.
	em.Emit(outcome("shop", "b2@example.net", events.StatusFailed, 550))
	em.Emit(outcome("shop", "b3@example.net", events.StatusFailed, 550))
	rec.WaitFor(t, events.Paused, func(e events.Event) bool { return e.User == "shop" })
	relaytest.Eventually(t, "both nodes see the pause", func() bool {
		_, pa := a.guard.Paused("shop")
		_, pb := b.guard.Paused("shop")
		return pa && pb
	})
	err = mail(t, addr, tc)
	var te *textproto.Error
	if !errors.As(err, &te) || te.Code != 451 || te.Msg != "4.7.1 sending paused: bounce rate 13.6% over 1h" {
		t.Fatalf("MAIL while paused: %v, want 451 4.7.1 sending paused: bounce rate 13.6%% over 1h", err)
	}
	if n := rec.Count(events.Paused, nil); n != 1 {
		t.Errorf("%d paused events, want 1", n)
	}
	if n := rec.Count(events.BounceRateWarning, nil); n != 1 {
		t.Errorf("%d warnings, want 1 (once per crossing)", n)
	}

	// Resume: MAIL is accepted again and the old bounces no longer count.
	if err := guard.Resume(ctx, q.JetStream(), em, "shop", "operator"); err != nil {
		t.Fatal(err)
	}
	if err := guard.Resume(ctx, q.JetStream(), em, "shop", "operator"); !errors.Is(err, guard.ErrNotPaused) {
		t.Errorf("second resume: %v, want ErrNotPaused", err)
	}
	rec.WaitFor(t, events.Resumed, func(e events.Event) bool { return e.User == "shop" && e.Actor == "operator" })
	relaytest.Eventually(t, "the pause lifted", func() bool { _, p := a.guard.Paused("shop"); return !p })
	if err := mail(t, addr, tc); err != nil {
		t.Fatalf("MAIL after resume: %v", err)
	}
	em.Emit(outcome("shop", "after@example.net", events.StatusDelivered, 250))
	relaytest.Eventually(t, "counted after the resume", func() bool {
		c, err := a.store.Totals(ctx, stats.Query{User: "shop", Since: since})
		return err == nil && c.Delivered == 20
	})
	relaytest.Eventually(t, "consumer settled", func() bool {
		c, err := q.JetStream().Consumer(ctx, events.StreamName, stats.ConsumerName)
		if err != nil {
			return false
		}
		info, err := c.Info(ctx)
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	})
	if _, p := a.guard.Paused("shop"); p || rec.Count(events.Paused, nil) != 1 {
		t.Errorf("paused again after resume (the old window counted)")
	}
}
