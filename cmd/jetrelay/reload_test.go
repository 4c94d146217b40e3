package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/jetrelay/jetrelay/relay/admin"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/relaytest"
	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"
)

// reloadEnv is a relay built and started in this process exactly as serve
// does (relay.start), with its delivery engine running, against two fake
// DNS servers and fake MX hosts; reloads go through relay.reloadTo, the
// function SIGHUP calls.
type reloadEnv struct {
	r              *relay
	cfg            *config.Config // the start configuration
	logs           *syncBuffer
	mxA, mxB       *relaytest.MX // dest.test's MX in zone A and in zone B
	dnsA, dnsB     string
	user, pass     string
	intake, subTLS string
}

const (
	reloadVERPA = "verp-a.test"
	reloadVERPB = "verp-b.test"
)

func newReloadEnv(t *testing.T) *reloadEnv {
	t.Helper()
	e := &reloadEnv{logs: &syncBuffer{}, mxA: relaytest.FakeMX(t), user: "app", pass: "app-pass"}
	e.mxB = relaytest.FakeMX(t)
	zoneA, zoneB := relaytest.NewZone(), relaytest.NewZone()
	for _, z := range []struct {
		zone *relaytest.Zone
		mx   *relaytest.MX
	}{{zoneA, e.mxA}, {zoneB, e.mxB}} {
		z.zone.AddMX("dest.test", 10, "mx.dest.test")
		z.zone.AddA("mx.dest.test", z.mx.IP)
		z.zone.AddMX("sender.test", 10, "mx.sender.test")
		z.zone.AddA("mx.sender.test", z.mx.IP)
	}
	e.dnsA, e.dnsB = relaytest.FakeDNS(t, zoneA), relaytest.FakeDNS(t, zoneB)

	cfg := relaytest.Config(t, e.dnsA, e.mxA.Port)
	e.subTLS = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	e.intake = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg.Submission.Listeners = []config.Listener{{Addr: e.subTLS, TLS: "starttls"}}
	cfg.Submission.Users = []config.User{{Name: e.user, PasswordHash: bcryptHash(t, e.pass), AllowedFrom: []string{"*"}}}
	cfg.Bounces.VERPDomain, cfg.Bounces.Listen = reloadVERPA, e.intake
	cfg.Admin.Listen = ""
	cfg.Path = filepath.Join(t.TempDir(), "jetrelay.yaml") // reloadTo never reads it
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	e.cfg = cfg
	e.start(t)
	return e
}

func (e *reloadEnv) start(t *testing.T) {
	t.Helper()
	q := queuetest.RunJetStream(t)
	log := zerolog.New(io.MultiWriter(zerolog.NewTestWriter(t), e.logs))
	cfg := *e.cfg
	e.r = &relay{cfg: &cfg, log: log, q: q, metrics: admin.NewMetrics()}
	if err := e.r.start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.r.eng.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("delivery engine did not stop")
		}
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		_ = e.r.sub.Shutdown(sctx)
		_ = e.r.bouncer.Shutdown(sctx)
		e.r.stopMsgIndex()
		e.r.closeWebhooks()
		e.r.stopStats() // before the publisher: the guard emits through it
		_ = e.r.evPub.Close(sctx)
		e.r.shaper.Close()
		e.r.tlsrpt.stop()
	})
}

// next returns a copy of the start configuration to change and reload.
func (e *reloadEnv) next() *config.Config {
	c := *e.cfg
	c.Submission.Users = slices.Clone(c.Submission.Users)
	return &c
}

// send queues one message from app@sender.test to rcpt and returns its id.
func (e *reloadEnv) send(t *testing.T, rcpt string, arrival time.Time) string {
	t.Helper()
	env := &queue.Envelope{From: "app@sender.test", Domain: "dest.test", Arrival: arrival,
		Rcpts: []queue.Recipient{{Addr: rcpt}}}
	m := &queue.Message{Body: []byte("Subject: reload\r\nMessage-ID: <" + rcpt + ">\r\n\r\nhi\r\n"),
		Entries: []*queue.Envelope{env}}
	if err := e.r.q.Enqueue(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	return m.ID
}

// received waits until mx got a message for rcpt and returns it.
func received(t *testing.T, mx *relaytest.MX, rcpt string) relaytest.Message {
	t.Helper()
	var got relaytest.Message
	queuetest.Eventually(t, 60*time.Second, "a message for "+rcpt+" at "+mx.Addr, func() bool {
		for _, m := range mx.Messages() {
			if slices.Contains(m.Rcpts, rcpt) {
				got = m
				return true
			}
		}
		return false
	})
	return got
}

// intakeReply is the intake's reply code to RCPT TO:<addr> after MAIL FROM:<>.
func (e *reloadEnv) intakeReply(t *testing.T, addr string) int {
	t.Helper()
	c, err := smtp.Dial(e.intake)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("mx.remote.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("", nil); err != nil {
		t.Fatal(err)
	}
	err = c.Rcpt(addr, nil)
	var se *smtp.SMTPError
	switch {
	case err == nil:
		return 250
	case errors.As(err, &se):
		return se.Code
	}
	t.Fatalf("RCPT %s: %v", addr, err)
	return 0
}

// canLogin reports whether user/pass authenticate at submission.
func (e *reloadEnv) canLogin(user, pass string) bool {
	c, err := authenticate(e.subTLS, user, pass)
	if err == nil {
		c.Close()
	}
	return err == nil
}

func domainOf(addr string) string { return addr[strings.LastIndexByte(addr, '@')+1:] }

// TestReloadIsSeenTogether: one reload changing bounces.verp_domain,
// delivery.retry.max_age and bounces.delay_notice_after reaches delivery
// (the envelope sender on the wire, the expiry decision), the bounce intake
// (the new domain's tokens) and DSNs (the new max_age) together. Tokens of
// the replaced domain minted before the reload stay accepted (mail in
// flight keeps its bounce address); forged domains do not.
func TestReloadIsSeenTogether(t *testing.T) {
	t.Parallel()
	e := newReloadEnv(t)
	before := received(t, e.mxA, e.sendAndWait(t, "before@dest.test"))
	if domainOf(before.From) != reloadVERPA {
		t.Fatalf("envelope sender before the reload: %q", before.From)
	}

	next := e.next()
	next.Bounces.VERPDomain = reloadVERPB
	next.Delivery.Retry.MaxAge = config.Duration(3 * time.Hour)
	next.Bounces.DelayNoticeAfter = config.Duration(30 * time.Minute)
	next.Submission.Users = append(next.Submission.Users,
		config.User{Name: "newapp", PasswordHash: bcryptHash(t, "new-pass"), AllowedFrom: []string{"*"}})
	if st := e.r.reloadTo(next); st != reloadOK {
		t.Fatalf("reload status %q:\n%s", st, e.logs.String())
	}

	after := received(t, e.mxA, e.sendAndWait(t, "after@dest.test"))
	if domainOf(after.From) != reloadVERPB {
		t.Errorf("envelope sender after the reload: %q, want @%s", after.From, reloadVERPB)
	}
	for _, c := range []struct {
		addr string
		want int
	}{
		{after.From, 250},
		{before.From, 250}, // minted under the replaced domain before the reload
		{strings.Replace(before.From, reloadVERPA, "evil.test", 1), 550},
	} {
		if got := e.intakeReply(t, c.addr); got != c.want {
			t.Errorf("intake RCPT %s: %d, want %d", c.addr, got, c.want)
		}
	}
	if !e.canLogin("newapp", "new-pass") {
		t.Error("submission does not know the user the reload added")
	}

	// Two hours old and deferred: expired under the old max_age (1h), due
	// a delay notice under the new one, which must quote arrival + 3h.
	arrival := time.Now().Add(-2 * time.Hour).Truncate(time.Second)
	e.mxA.ReplyRcpt("slow@dest.test", relaytest.Err(451, "4.2.1", "try later"), -1)
	e.send(t, "slow@dest.test", arrival)
	dsn := received(t, e.mxA, "app@sender.test")
	body := string(dsn.Body)
	until := arrival.Add(3 * time.Hour).UTC().Format("Mon, 02 Jan 2006 15:04:05 -0700")
	if dsn.From != "" || !strings.Contains(body, "Action: delayed") || !strings.Contains(body, until) {
		t.Errorf("DSN from %q does not say delayed until %s:\n%s", dsn.From, until, body)
	}
}

// sendAndWait queues a message to rcpt now and returns rcpt.
func (e *reloadEnv) sendAndWait(t *testing.T, rcpt string) string {
	t.Helper()
	e.send(t, rcpt, time.Now())
	return rcpt
}

// TestReloadDNSServersAndPort: delivery.dns.servers and delivery.port
// apply to the next message (issue 14: they were silently kept).
func TestReloadDNSServersAndPort(t *testing.T) {
	t.Parallel()
	e := newReloadEnv(t)
	received(t, e.mxA, e.sendAndWait(t, "one@dest.test"))
	next := e.next()
	next.Delivery.DNS.Servers = []string{e.dnsB}
	next.Delivery.Port = e.mxB.Port
	if st := e.r.reloadTo(next); st != reloadOK {
		t.Fatalf("reload status %q:\n%s", st, e.logs.String())
	}
	received(t, e.mxB, e.sendAndWait(t, "two@dest.test"))
	if n := e.mxA.Received("two@dest.test"); n != 0 {
		t.Errorf("the old MX got the message after the reload (%d)", n)
	}
}

// TestReloadRefusedChangesNothing: when one component refuses the new
// settings, no component takes any of them: delivery keeps its DNS and
// VERP domain, the intake its domain, submission its users.
func TestReloadRefusedChangesNothing(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		spoil func(t *testing.T, c *config.Config)
	}{
		{"ca_file", func(t *testing.T, c *config.Config) {
			c.Delivery.TLS.CAFile = filepath.Join(t.TempDir(), "missing.pem")
		}},
		{"certificate", func(t *testing.T, c *config.Config) {
			missing := filepath.Join(t.TempDir(), "missing.pem")
			c.Submission.TLS = config.TLSFiles{Cert: missing, Key: missing}
		}},
		{"dkim key", func(t *testing.T, c *config.Config) {
			bad := filepath.Join(t.TempDir(), "bad.key")
			if err := os.WriteFile(bad, []byte("not a key\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			c.DKIM.Keys = []config.DKIMKey{{Domain: "sender.test", Selector: "s1", Key: bad}}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newReloadEnv(t)
			next := e.next()
			next.Bounces.VERPDomain = reloadVERPB
			next.Delivery.DNS.Servers = []string{e.dnsB}
			next.Delivery.Port = e.mxB.Port
			next.Submission.Users = append(next.Submission.Users,
				config.User{Name: "newapp", PasswordHash: bcryptHash(t, "new-pass"), AllowedFrom: []string{"*"}})
			tc.spoil(t, next)
			if st := e.r.reloadTo(next); st != reloadRefused {
				t.Fatalf("reload status %q, want refused:\n%s", st, e.logs.String())
			}
			m := received(t, e.mxA, e.sendAndWait(t, "after@dest.test"))
			if domainOf(m.From) != reloadVERPA {
				t.Errorf("envelope sender after a refused reload: %q", m.From)
			}
			if got := e.intakeReply(t, strings.Replace(m.From, reloadVERPA, reloadVERPB, 1)); got != 550 {
				t.Errorf("intake accepted the refused VERP domain: %d", got)
			}
			if e.intakeReply(t, m.From) != 250 {
				t.Error("intake refuses the running VERP domain")
			}
			if e.canLogin("newapp", "new-pass") {
				t.Error("submission took a user from the refused config")
			}
			if !e.canLogin(e.user, e.pass) {
				t.Error("the running user cannot log in")
			}
			if e.r.cfg.Delivery.DNS.Servers[0] != e.dnsA {
				t.Error("the running config changed")
			}
		})
	}
}

// TestReloadNamesRestartSettings: settings that need a restart keep their
// running values and are named in the log line; the status is not "ok".
func TestReloadNamesRestartSettings(t *testing.T) {
	t.Parallel()
	e := newReloadEnv(t)
	next := e.next()
	next.NATS.Listen = "127.0.0.1:1"
	next.Submission.MaxRecipients = 7
	next.Delivery.MaxPerDestination = 3
	if st := e.r.reloadTo(next); st != reloadRestartNeeded {
		t.Fatalf("reload status %q, want %s:\n%s", st, reloadRestartNeeded, e.logs.String())
	}
	logs := e.logs.String()
	if !strings.Contains(logs, `"restart_needed":["nats.listen","submission.max_recipients"]`) ||
		!strings.Contains(logs, `"applied":["delivery.max_per_destination"]`) {
		t.Errorf("log does not name the settings:\n%s", e.logs.String())
	}
	if e.r.cfg.NATS.Listen == next.NATS.Listen || e.r.cfg.Delivery.MaxPerDestination != 3 {
		t.Errorf("running config: nats.listen %q, max_per_destination %d", e.r.cfg.NATS.Listen,
			e.r.cfg.Delivery.MaxPerDestination)
	}
}

func bcryptHash(t *testing.T, pass string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}
