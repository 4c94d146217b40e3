package bounce

import (
	"bytes"
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/events"
)

// TestE2EComplaintSuppresses: submission → queue → delivery with a VERP
// return path → the recipient's provider sends an ARF abuse report to
// bounces.fbl_address, recipient redacted and no VERP address in it,
// only the delivered header section → the message is found by the queue
// id of jetrelay's Received field; a complaint event carries the
// submitting user; the recipient is suppressed and the next submission
// to it is refused at RCPT.
func TestE2EComplaintSuppresses(t *testing.T) {
	t.Parallel()
	w := newWorld(t, func(c *config.Config) {
		c.Bounces.VERPDomain = "bounces.relay.test"
		c.Bounces.Listen = "127.0.0.1:0"
		c.Bounces.FBLAddress = fblAddr
	})
	if err := w.b.StartIntake(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.b.Shutdown(t.Context()) })
	addr := w.startSubmit()
	if err := submitTo(t, addr, "bob@example.org"); err != nil {
		t.Fatalf("submission: %v", err)
	}
	accepted := w.rec.WaitFor(t, events.Accepted, nil)
	w.waitEvent(events.Delivery, events.StatusDelivered, "bob@example.org")
	got := w.rcptMX.Messages()[0]
	if !strings.HasPrefix(got.From, "b+") {
		t.Fatalf("delivered with MAIL FROM %q, want a VERP address", got.From)
	}
	head := got.Body[:bytes.Index(got.Body, []byte("\r\n\r\n"))+2]
	head = regexp.MustCompile(`(?m)^To: .*$`).ReplaceAll(head, []byte("To: redacted@example.org"))
	head = regexp.MustCompile(`for <bob@example.org>`).ReplaceAll(head, []byte("for <redacted@example.org>"))
	msg := report(arfHuman, feedbackPart("Feedback-Type: abuse\r\nUser-Agent: BigMail-FBL/2\r\nVersion: 1\r\n"),
		"Content-Type: text/rfc822-headers\r\n\r\n"+string(head))
	if err := sendFrom(t, w.b, "fbl@bigmail.example", fblAddr, msg); err != nil {
		t.Fatalf("report refused: %v", err)
	}
	c := w.rec.WaitFor(t, events.Complaint, nil)
	if c.QueueID != accepted.QueueID || c.User != submitUser || c.Rcpt != "bob@example.org" ||
		c.FeedbackType != "abuse" || c.MsgID != "<inv-7@example.com>" {
		t.Errorf("complaint event %+v, want queue id %s, user %s, rcpt bob", c, accepted.QueueID, submitUser)
	}
	w.waitEvent(events.Suppressed, "", "bob@example.org")
	err := submitTo(t, addr, "bob@example.org")
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 550 || se.EnhancedCode != (smtp.EnhancedCode{5, 1, 1}) {
		t.Errorf("submission after the complaint: %v, want 550 5.1.1", err)
	}
}
