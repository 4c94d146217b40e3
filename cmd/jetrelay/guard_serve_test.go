package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/relaytest"
	"github.com/rs/zerolog"
)

// mailFrom logs in and says MAIL FROM; it returns MAIL's refusal, if any.
func mailFrom(t *testing.T, c testRelayConfig) error {
	t.Helper()
	cl, err := authenticate(c.subAddr, c.user, c.pass)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	err = cl.Mail("app@example.com", nil)
	_ = cl.Quit()
	return err
}

// TestServeGuardPausesAtMail: a running relay counts its user's outcomes
// from the events stream (statswire.go), pauses the user past the
// guard's threshold — MAIL gets 451 4.7.1 — and `user resume` lifts it.
func TestServeGuardPausesAtMail(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	c := writeRelayConfig(t)
	guarded := strings.TrimSuffix(c.userLine(t, c.user, c.pass), "}") + ", bounce_guard: {pause: 10%, min_volume: 5}}"
	c.write(t, guarded)
	p := startRelay(t, c.cfgPath, c.subAddr)
	if err := mailFrom(t, c); err != nil {
		t.Fatalf("MAIL before any bounce: %v", err)
	}

	// Outcomes of app's mail, as delivery would publish them: 3 delivered, 2 hard bounces.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	q, err := connectNATS(ctx, &natsFlags{config: c.cfgPath}, "test")
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	pub, err := events.NewPublisher(events.PublisherOptions{Conn: q.Conn(), Logger: zerolog.Nop(), Attach: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for i, rcpt := range []string{"a@example.net", "b@example.net", "c@example.net", "d@example.net", "e@example.net"} {
		e := &events.Event{Time: time.Now().UTC(), Event: events.Delivery, User: c.user, QueueID: "Q1", Rcpt: rcpt,
			Domain: "example.net", Status: events.StatusDelivered, SMTPCode: 250}
		if i >= 3 {
			e.Status, e.SMTPCode = events.StatusFailed, 550
		}
		pub.Publish(e)
	}
	if err := pub.Close(ctx); err != nil {
		t.Fatal(err)
	}

	var last error
	relaytest.Eventually(t, "MAIL refused while paused", func() bool {
		last = mailFrom(t, c)
		var se *smtp.SMTPError
		return errors.As(last, &se) && se.Code == 451 && se.EnhancedCode == smtp.EnhancedCode{4, 7, 1} &&
			se.Message == "sending paused: bounce rate 40.0% over 24h"
	})
	if !strings.Contains(p.logs.String(), `"event":"paused"`) {
		t.Errorf("no paused event in the log:\n%s", p.logs.String())
	}

	var out, errb bytes.Buffer
	if rc := run([]string{"stats", "--config", c.cfgPath}, stdio{strings.NewReader(""), &out, &errb}); rc != 0 ||
		!strings.Contains(out.String(), "paused: bounce rate 40.0% over 24h") {
		t.Errorf("stats: rc %d: %s%s", rc, out.String(), errb.String())
	}
	out.Reset()
	if rc := run([]string{"user", "resume", c.user, "--config", c.cfgPath}, stdio{strings.NewReader(""), &out, &errb}); rc != 0 {
		t.Fatalf("user resume: rc %d: %s", rc, errb.String())
	}
	relaytest.Eventually(t, "MAIL accepted after resume", func() bool { last = mailFrom(t, c); return last == nil })
}
