package bounce

import (
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/relaytest"
	"github.com/jetrelay/jetrelay/relay/submit"
	"golang.org/x/crypto/bcrypt"
)

const submitUser, submitPass = "app", "app-secret"

// startSubmit runs relay/submit on loopback with the Bouncer as its
// Suppressor, and returns the listener address.
func (w *world) startSubmit() string {
	w.t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(submitPass), bcrypt.MinCost)
	if err != nil {
		w.t.Fatal(err)
	}
	cfg := *w.cfg
	cfg.Submission.Listeners = []config.Listener{{Addr: "127.0.0.1:0", TLS: "starttls"}}
	cfg.Submission.Users = []config.User{{Name: submitUser, PasswordHash: string(h), AllowedFrom: []string{"example.com"}}}
	tlsConf, err := submit.LoadOrCreateTLS(submitSettings(&cfg))
	if err != nil {
		w.t.Fatal(err)
	}
	brake, err := submit.OpenBrake(w.t.Context(), submit.BrakeOptions{JetStream: w.q.JetStream()})
	if err != nil {
		w.t.Fatal(err)
	}
	srv, err := submit.New(submit.Options{Settings: submitSettings(&cfg), Queue: w.q, Suppressor: w.b, Events: w.em,
		Logger: relaytest.Logger(w.t), TLS: tlsConf, Brake: brake})
	if err != nil {
		w.t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), e2eWait)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return srv.Addrs()[0].String()
}

// submitTo submits e2eBody to rcpt; it returns the first SMTP error.
func submitTo(t *testing.T, addr, rcpt string) error {
	t.Helper()
	// Loopback test against the generated self-signed certificate.
	c, err := smtp.DialStartTLS(addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", submitUser, submitPass)); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("app@example.com", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt(rcpt, nil); err != nil {
		return err
	}
	wc, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := wc.Write([]byte(e2eBody)); err != nil {
		return err
	}
	return wc.Close()
}

// TestE2EHardBounceSuppressesSubmission: submission → queue → delivery →
// 550 5.1.1 → suppressed; the next submission to that address is refused
// at RCPT with 550 5.1.1 naming the date; lifting it lets mail through.
func TestE2EHardBounceSuppressesSubmission(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	w.rcptMX.ReplyRcpt("bob@example.org", relaytest.Err(550, "5.1.1", "user unknown"), 1)
	addr := w.startSubmit()
	if err := submitTo(t, addr, "bob@example.org"); err != nil {
		t.Fatalf("first submission: %v", err)
	}
	if s := w.waitEvent(events.Suppressed, "", "bob@example.org"); s.User != submitUser {
		t.Errorf("suppressed event user %q, want %q", s.User, submitUser)
	}
	err := submitTo(t, addr, "Bob@example.org")
	var se *smtp.SMTPError
	want := "recipient suppressed after hard bounce on " + time.Now().UTC().Format("2006-01-02")
	if !errors.As(err, &se) || se.Code != 550 || se.EnhancedCode != (smtp.EnhancedCode{5, 1, 1}) ||
		!strings.Contains(se.Message, want) {
		t.Fatalf("second submission: %v, want 550 5.1.1 %s", err, want)
	}
	if _, err := w.b.Suppressions().Remove(context.Background(), "bob@example.org", "test"); err != nil {
		t.Fatal(err)
	}
	if err := submitTo(t, addr, "bob@example.org"); err != nil {
		t.Fatalf("after removal: %v", err)
	}
	relaytest.Eventually(t, "bob's second delivery", func() bool { return w.rcptMX.Received("bob@example.org") == 1 })
}

// submitSettings is what cmd/jetrelay builds from a configuration.
func submitSettings(cfg *config.Config) submit.Settings {
	return submit.Settings{Hostname: cfg.Hostname, DataDir: cfg.DataDir, Submission: cfg.Submission}
}
