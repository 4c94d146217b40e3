package bounce

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/jetrelay/jetrelay/relay/events"
)

func intakeFixture(t *testing.T) *fixture {
	t.Helper()
	cfg := testConfig(t)
	cfg.Bounces.VERPDomain = "bounces.relay.test"
	cfg.Bounces.Listen = "127.0.0.1:0"
	f := newFixture(t, cfg)
	if err := f.b.StartIntake(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := f.b.Shutdown(ctx); err != nil {
			t.Errorf("intake shutdown: %v", err)
		}
	})
	return f
}

// sendBounce delivers msg to rcpt at the intake; it returns the first
// SMTP error (nil when the bounce was accepted).
func sendBounce(t *testing.T, f *fixture, rcpt, msg string) error {
	t.Helper()
	c, err := smtp.Dial(f.b.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("mx.example.org"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.Extension("AUTH"); ok {
		t.Error("intake advertises AUTH")
	}
	return transact(c, rcpt, msg)
}

// transact runs one bounce transaction (null sender) for rcpt on c, after
// its EHLO, and quits.
func transact(c *smtp.Client, rcpt, msg string) error {
	if err := c.Mail("", nil); err != nil {
		return err
	}
	if err := c.Rcpt(rcpt, nil); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write([]byte(msg)); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

func sample(t *testing.T, name, rcpt string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "bounces", name))
	if err != nil {
		t.Fatal(err)
	}
	return strings.ReplaceAll(string(b), "b+token@bounces.relay.test", rcpt)
}

// TestIntakeVERPBounce: an RFC 3464 DSN at a VERP address is matched to
// its message and recipient, recorded as event=bounced, and suppresses.
func TestIntakeVERPBounce(t *testing.T) {
	t.Parallel()
	f := intakeFixture(t)
	env := origEnv()
	verp := verpOf(t, f.b, env, "bob@example.org")
	if err := sendBounce(t, f, verp, sample(t, "postfix.eml", verp)); err != nil {
		t.Fatalf("bounce refused: %v", err)
	}
	evs := f.rec.Find(events.Bounced, nil)
	if len(evs) != 1 {
		t.Fatalf("bounced events %+v, want 1", evs)
	}
	e := evs[0]
	if e.QueueID != env.ID || e.Rcpt != "bob@example.org" || e.SMTPEnh != "5.1.1" || e.MX != "mailstore.example.org" ||
		!strings.Contains(e.Reply, "User unknown") || !strings.HasPrefix(e.RemoteAddr, "127.0.0.1:") {
		t.Errorf("bounced event %+v", e)
	}
	since, ok, err := f.b.Suppressed(context.Background(), "bob@example.org")
	if !ok || err != nil || !since.Equal(t0) {
		t.Errorf("Suppressed = %v, %v, %v; want since %v", since, ok, err, t0)
	}
	if s := f.rec.Find(events.Suppressed, nil); len(s) != 1 || s[0].Actor != ActorIntake || s[0].QueueID != env.ID {
		t.Errorf("suppressed events %+v", s)
	}
}

// TestIntakeRefuses: forged tokens and other domains get 550 5.7.1 at
// RCPT: the intake is never an open relay.
func TestIntakeRefuses(t *testing.T) {
	t.Parallel()
	f := intakeFixture(t)
	verp := verpOf(t, f.b, origEnv(), "bob@example.org")
	at := strings.IndexByte(verp, '@')
	forged := verp[:at-1] + map[bool]string{true: "1", false: "0"}[verp[at-1] == '0'] + verp[at:]
	for _, rcpt := range []string{forged, "bob@example.org", "postmaster@bounces.relay.test",
		strings.Replace(verp, "bounces.relay.test", "relay.test", 1)} {
		err := sendBounce(t, f, rcpt, sample(t, "postfix.eml", rcpt))
		var se *smtp.SMTPError
		if !errors.As(err, &se) || se.Code != 550 || se.EnhancedCode != (smtp.EnhancedCode{5, 7, 1}) {
			t.Errorf("RCPT %s: %v, want 550 5.7.1", rcpt, err)
		}
	}
	if evs := f.rec.Find(events.Bounced, nil); len(evs) != 0 {
		t.Errorf("forged bounces recorded: %+v", evs)
	}
	if _, ok, _ := f.b.Suppressed(context.Background(), "bob@example.org"); ok {
		t.Error("forged bounce suppressed the recipient")
	}
}

// TestIntakeTextBounces: a plain-text bounce is recorded only if it names
// the VERP token's recipient and a permanent status, and never suppresses
// (its status is a guess from free text); non-bounces are ignored.
func TestIntakeTextBounces(t *testing.T) {
	t.Parallel()
	f := intakeFixture(t)
	env := origEnv()
	cases := []struct {
		file, rcpt string
		bounced    bool
	}{
		{"qmail.eml", "dave@example.net", false},
		{"qmail.eml", "zoe@example.net", false}, // names another address
		{"vacation.eml", "bob@example.org", false},
		{"delayed_base64.eml", "frank@example.org", false}, // delayed, not failed
	}
	for _, c := range cases {
		verp := verpOf(t, f.b, env, c.rcpt)
		if err := sendBounce(t, f, verp, sample(t, c.file, verp)); err != nil {
			t.Fatalf("%s: %v", c.file, err)
		}
		_, ok, _ := f.b.Suppressed(context.Background(), c.rcpt)
		if ok != c.bounced {
			t.Errorf("%s for %s: suppressed=%v, want %v", c.file, c.rcpt, ok, c.bounced)
		}
	}
	evs := f.rec.Find(events.Bounced, nil)
	if len(evs) != 1 || evs[0].Rcpt != "dave@example.net" || evs[0].SMTPEnh != "5.1.1" ||
		!strings.HasPrefix(evs[0].Reason, "not suppressed") {
		t.Errorf("bounced events %+v, want one for dave@example.net", evs)
	}
}

func TestIntakeNeedsConfig(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	if err := f.b.StartIntake(); err == nil {
		t.Error("started without bounces.listen")
	}
	if f.b.Addr() != nil || f.b.Shutdown(context.Background()) != nil {
		t.Error("Addr/Shutdown before start")
	}
}
