package bounce

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"
	"github.com/google/go-cmp/cmp"
	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/events"
)

const fblAddr = "fbl@bounces.relay.test"

// complaintFixture is the intake with bounces.fbl_address set.
func complaintFixture(t *testing.T) *fixture {
	t.Helper()
	cfg := testConfig(t)
	cfg.Bounces.VERPDomain = "bounces.relay.test"
	cfg.Bounces.Listen = "127.0.0.1:0"
	cfg.Bounces.FBLAddress = fblAddr
	f := newFixture(t, cfg)
	if err := f.b.StartIntake(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), e2eWait)
		defer cancel()
		if err := f.b.Shutdown(ctx); err != nil {
			t.Errorf("intake shutdown: %v", err)
		}
	})
	return f
}

// shopEnv is a message of user shop with meta and tag, under a fresh id.
func shopEnv() *queue.Envelope {
	env := origEnv()
	env.ID, env.User, env.Meta, env.Tag = queue.NewID(), "shop", map[string]string{"order": "42"}, "invoice"
	return env
}

// sendFrom delivers msg from a (non-null) sender to rcpt at the intake.
func sendFrom(t *testing.T, b *Bouncer, from, rcpt, msg string) error {
	t.Helper()
	c, err := smtp.Dial(b.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("fbl.isp.example"); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail(from, nil); err != nil {
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

// original is an attached original's header section (text/rfc822-headers).
func original(fields string) string {
	return "Content-Type: text/rfc822-headers\r\n\r\n" + fields + "Subject: Your invoice\r\n"
}

// jetrelayReceived is the Received field submission stamps for id.
func jetrelayReceived(id string) string {
	return "Received: from app.example.com ([192.0.2.7])\r\n\tby relay.test (jetrelay) with ESMTPSA\r\n\tid " + id +
		";\r\n\tSat, 14 Mar 2026 08:59:59 +0000\r\n"
}

func complaintsOf(f *fixture, qid string) []events.Event {
	return f.rec.Find(events.Complaint, func(e events.Event) bool { return e.QueueID == qid })
}

// TestComplaintAtVERP: an abuse report from an ordinary sender at the
// message's VERP address, recipient redacted, suppresses the token's
// recipient with a reason naming the complaint, and publishes a complaint
// event carrying the message's user, meta and tag.
func TestComplaintAtVERP(t *testing.T) {
	t.Parallel()
	f := complaintFixture(t)
	env := shopEnv()
	verp := verpOf(t, f.b, env, "bob@example.org")
	msg := report(arfHuman, feedbackPart("Feedback-Type: ABUSE\r\nUser-Agent: ExampleFBL/1.0\r\nVersion: 1\r\n"+
		"Original-Rcpt-To: <redacted@example.org>\r\n"), original("To: redacted@example.org\r\n"))
	if err := sendFrom(t, f.b, "reports@isp.example", verp, msg); err != nil {
		t.Fatalf("report refused: %v", err)
	}
	evs := complaintsOf(f, env.ID)
	if len(evs) != 1 {
		t.Fatalf("complaint events %+v, want 1", f.rec.All())
	}
	e := evs[0]
	want := events.Event{Event: events.Complaint, QueueID: env.ID, MsgID: env.MsgID, Rcpt: "bob@example.org",
		User: "shop", Meta: map[string]string{"order": "42"}, Tag: "invoice", FeedbackType: "abuse",
		Reply: "ARF complaint: feedback-type abuse (ExampleFBL/1.0)", Reason: "suppressed: abuse complaint",
		RemoteAddr: e.RemoteAddr, Time: e.Time}
	if d := cmp.Diff(want, e); d != "" {
		t.Errorf("complaint event (-want +got):\n%s", d)
	}
	list, err := f.b.Suppressions().List(context.Background())
	if err != nil || len(list) != 1 || list[0].Addr != "bob@example.org" ||
		!strings.Contains(list[0].Reason, "ARF complaint: feedback-type abuse") || list[0].QueueID != env.ID {
		t.Errorf("suppression list %+v, %v; want bob for the complaint", list, err)
	}
	if n := len(f.rec.Find(events.Bounced, nil)); n != 0 {
		t.Errorf("%d bounced events for a complaint", n)
	}
}

// TestComplaintAtFBLAddress: reports at bounces.fbl_address find their
// message by Original-Mail-From, the original's Return-Path, jetrelay's
// Received id or Message-ID; abuse suppresses the recorded recipient,
// other types are evented only, an unknown message is accepted and
// dropped with a log line.
func TestComplaintAtFBLAddress(t *testing.T) {
	t.Parallel()
	f := complaintFixture(t)
	type tc struct {
		name     string
		rcpts    []string // VERP records minted for the message
		report   func(env *queue.Envelope, verp []string) string
		wantRcpt string // the complaint event's recipient
		suppress string // "" = nothing suppressed
	}
	fields := func(typ, extra string) string {
		return feedbackPart("Feedback-Type: " + typ + "\r\nUser-Agent: ExampleFBL/1.0\r\nVersion: 1\r\n" + extra)
	}
	cases := []tc{
		{"Original-Mail-From", []string{"amy@example.org"}, func(_ *queue.Envelope, v []string) string {
			return report(arfHuman, fields("abuse", "Original-Mail-From: <"+v[0]+">\r\n"))
		}, "amy@example.org", "amy@example.org"},
		{"Return-Path", []string{"carol@example.org"}, func(_ *queue.Envelope, v []string) string {
			return report(arfHuman, fields("abuse", ""), original("Return-Path: <"+v[0]+">\r\n"))
		}, "carol@example.org", "carol@example.org"},
		{"Received id, recipient redacted", []string{"dave@example.org"}, func(e *queue.Envelope, _ []string) string {
			return report(arfHuman, fields("abuse", ""), original(jetrelayReceived(e.ID)+"To: xxxxx@example.org\r\n"))
		}, "dave@example.org", "dave@example.org"},
		{"Message-ID, Original-Rcpt-To names one of two", []string{"erin@example.org", "frank@example.org"},
			func(e *queue.Envelope, _ []string) string {
				return report(arfHuman, fields("abuse", "Original-Rcpt-To: Frank@example.org\r\n"),
					original("Message-ID: <"+e.ID+"@relay.test>\r\n"))
			}, "frank@example.org", "frank@example.org"},
		{"two recipients, redacted", []string{"gina@example.org", "hank@example.org"},
			func(e *queue.Envelope, _ []string) string {
				return report(arfHuman, fields("abuse", ""), original(jetrelayReceived(e.ID)))
			}, "", ""},
		{"not-spam", []string{"ivan@example.org"}, func(_ *queue.Envelope, v []string) string {
			return report(arfHuman, fields("not-spam", "Original-Mail-From: <"+v[0]+">\r\n"))
		}, "ivan@example.org", ""},
	}
	for _, c := range cases {
		env := shopEnv()
		var verps []string
		for _, r := range c.rcpts {
			verps = append(verps, verpOf(t, f.b, env, r))
		}
		if err := sendFrom(t, f.b, "", fblAddr, c.report(env, verps)); err != nil {
			t.Fatalf("%s: report refused: %v", c.name, err)
		}
		evs := complaintsOf(f, env.ID)
		if len(evs) != 1 || evs[0].Rcpt != c.wantRcpt || evs[0].User != "shop" || evs[0].Tag != "invoice" {
			t.Errorf("%s: complaint events %+v, want one for %q of user shop", c.name, evs, c.wantRcpt)
		}
		for _, r := range c.rcpts {
			if got := suppressed(t, f, r); got != (r == c.suppress) {
				t.Errorf("%s: %s suppressed=%v", c.name, r, got)
			}
		}
	}
	unknown := queue.NewID()
	msg := report(arfHuman, fields("abuse", "Original-Rcpt-To: zed@example.org\r\n"), original(jetrelayReceived(unknown)))
	if err := sendFrom(t, f.b, "reports@isp.example", fblAddr, msg); err != nil {
		t.Errorf("report about an unknown message: %v, want it accepted", err)
	}
	if evs := complaintsOf(f, unknown); len(evs) != 0 || suppressed(t, f, "zed@example.org") {
		t.Errorf("unknown message: events %+v or suppression", evs)
	}
}

// TestComplaintRefused: mail at the feedback-loop address that is not a
// report, and malformed reports anywhere, get 550 5.6.0 saying why;
// nothing is recorded or suppressed for them. Without fbl_address the
// intake takes no such address.
func TestComplaintRefused(t *testing.T) {
	t.Parallel()
	f := complaintFixture(t)
	env := shopEnv()
	verp := verpOf(t, f.b, env, "bob@example.org")
	enh := smtp.EnhancedCode{5, 6, 0}
	plain := "From: someone@example.net\r\nSubject: please add me\r\n\r\nhello\r\n"
	err := sendFrom(t, f.b, "someone@example.net", fblAddr, plain)
	wantSMTP(t, "plain mail at fbl_address", err, 550, enh)
	if err == nil || !strings.Contains(err.Error(), "accepts only ARF feedback reports") {
		t.Errorf("reply %v does not say what the address takes", err)
	}
	noType := report(arfHuman, feedbackPart("User-Agent: x/1\r\nOriginal-Mail-From: <"+verp+">\r\n"))
	for _, to := range []string{fblAddr, verp} {
		err := sendFrom(t, f.b, "", to, noType)
		wantSMTP(t, "report without Feedback-Type at "+to, err, 550, enh)
		if err == nil || !strings.Contains(err.Error(), "exactly one Feedback-Type") {
			t.Errorf("reply %v does not name the problem", err)
		}
	}
	dsn := sample(t, "postfix.eml", fblAddr)
	wantSMTP(t, "a DSN at fbl_address", sendFrom(t, f.b, "", fblAddr, dsn), 550, enh)
	if all := f.rec.All(); len(all) != 0 || suppressed(t, f, "bob@example.org") {
		t.Errorf("refused mail recorded: events %+v", all)
	}
	plainIntake := intakeFixture(t)
	wantSMTP(t, "fbl address without fbl_address", sendFrom(t, plainIntake.b, "", fblAddr, plain),
		550, smtp.EnhancedCode{5, 7, 1})
}

// TestBouncedEventCarriesUser: an asynchronous bounce's event carries the
// message's user, Message-ID, meta and tag from the VERP record.
func TestBouncedEventCarriesUser(t *testing.T) {
	t.Parallel()
	f := intakeFixture(t)
	env := shopEnv()
	verp := verpOf(t, f.b, env, "bob@example.org")
	if err := sendBounce(t, f, verp, sample(t, "postfix.eml", verp)); err != nil {
		t.Fatal(err)
	}
	evs := f.rec.Find(events.Bounced, nil)
	if len(evs) != 1 || evs[0].User != "shop" || evs[0].MsgID != env.MsgID || evs[0].Tag != "invoice" ||
		!cmp.Equal(evs[0].Meta, env.Meta) || evs[0].QueueID != env.ID {
		t.Errorf("bounced events %+v, want one carrying user shop, meta and tag", evs)
	}
}

// TestComplaintInfoFromAcceptedEvent: a VERP record of an earlier version
// (the bare address) has no user: the message's accepted event on the
// events stream supplies it; without one the event goes out without.
func TestComplaintInfoFromAcceptedEvent(t *testing.T) {
	t.Parallel()
	f := complaintFixture(t)
	ctx := context.Background()
	js := f.q.JetStream()
	if _, err := events.EnsureStream(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	legacy := func(env *queue.Envelope, rcpt string) string {
		verp := verpOf(t, f.b, env, rcpt)
		if _, err := f.b.kv.Put(ctx, verpRecordKey(env.ID, rcptHash(rcpt)), []byte(rcpt)); err != nil {
			t.Fatal(err)
		}
		return verp
	}
	withEvent, without := shopEnv(), shopEnv()
	for _, e := range []*events.Event{
		{Event: events.Accepted, QueueID: queue.NewID(), User: "other"}, // same span, another message
		{Event: events.Accepted, QueueID: withEvent.ID, User: "shop", MsgID: "<m@example.com>",
			Meta: map[string]string{"order": "7"}, Tag: "receipt"},
	} {
		raw, _ := json.Marshal(e)
		if _, err := js.Publish(ctx, events.Subject(e), raw); err != nil {
			t.Fatal(err)
		}
	}
	for _, env := range []*queue.Envelope{withEvent, without} {
		verp := legacy(env, "bob@example.org")
		msg := report(arfHuman, feedbackPart("Feedback-Type: abuse\r\n"))
		if err := sendFrom(t, f.b, "", verp, msg); err != nil {
			t.Fatal(err)
		}
	}
	if evs := complaintsOf(f, withEvent.ID); len(evs) != 1 || evs[0].User != "shop" || evs[0].Tag != "receipt" ||
		evs[0].Meta["order"] != "7" || evs[0].MsgID != "<m@example.com>" {
		t.Errorf("complaint with an accepted event: %+v", evs)
	}
	if evs := complaintsOf(f, without.ID); len(evs) != 1 || evs[0].User != "" || evs[0].Rcpt != "bob@example.org" {
		t.Errorf("complaint without an accepted event: %+v", evs)
	}
	if !suppressed(t, f, "bob@example.org") {
		t.Error("abuse with a legacy record did not suppress")
	}
}
