package bounce

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/jetrelay/jetrelay/relay/events"
)

// postfixDSN is testdata's Postfix DSN for verp with the status, final and
// original recipient replaced.
func postfixDSN(t *testing.T, verp, status, final, orig string) string {
	t.Helper()
	s := sample(t, "postfix.eml", verp)
	s = strings.ReplaceAll(s, "Status: 5.1.1", "Status: "+status)
	s = strings.ReplaceAll(s, "Final-Recipient: rfc822; bob@example.org", "Final-Recipient: rfc822; "+final)
	return strings.ReplaceAll(s, "Original-Recipient: rfc822;bob@example.org", "Original-Recipient: rfc822;"+orig)
}

func wantSMTP(t *testing.T, what string, err error, code int, enh smtp.EnhancedCode) {
	t.Helper()
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != code || se.EnhancedCode != enh {
		t.Errorf("%s: %v, want %d %v", what, err, code, enh)
	}
}

func suppressed(t *testing.T, f *fixture, addr string) bool {
	t.Helper()
	_, ok, err := f.b.Suppressed(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// TestIntakeLateSpamDSN: a DSN with a genuine token but a non-mailbox
// status (a late or forged "5.7.1 rejected as spam") is accepted and
// evented, never suppressed.
func TestIntakeLateSpamDSN(t *testing.T) {
	t.Parallel()
	f := intakeFixture(t)
	verp := verpOf(t, f.b, origEnv(), "bob@example.org")
	if err := sendBounce(t, f, verp, postfixDSN(t, verp, "5.7.1", "bob@example.org", "bob@example.org")); err != nil {
		t.Fatalf("bounce refused: %v", err)
	}
	evs := f.rec.Find(events.Bounced, nil)
	if len(evs) != 1 || evs[0].SMTPEnh != "5.7.1" || evs[0].Rcpt != "bob@example.org" ||
		!strings.HasPrefix(evs[0].Reason, "not suppressed") {
		t.Errorf("bounced events %+v, want one 5.7.1 not suppressed", evs)
	}
	if suppressed(t, f, "bob@example.org") || len(f.rec.Find(events.Suppressed, nil)) != 0 {
		t.Error("5.7.1 DSN suppressed the recipient")
	}
}

// TestIntakeAliasMember: the token names sales@; the DSN reports a
// departed member of that alias with Original-Recipient sales@. Neither
// address is suppressed: the token's recipient is the truth and the
// Final-Recipient is not it.
func TestIntakeAliasMember(t *testing.T) {
	t.Parallel()
	f := intakeFixture(t)
	verp := verpOf(t, f.b, origEnv(), "sales@example.org")
	if err := sendBounce(t, f, verp, postfixDSN(t, verp, "5.1.1", "gone@example.org", "sales@example.org")); err != nil {
		t.Fatalf("bounce refused: %v", err)
	}
	for _, a := range []string{"sales@example.org", "gone@example.org"} {
		if suppressed(t, f, a) {
			t.Errorf("%s suppressed", a)
		}
	}
	evs := f.rec.Find(events.Bounced, nil)
	if len(evs) != 1 || evs[0].Rcpt != "sales@example.org" ||
		!strings.Contains(evs[0].Reason, "not the VERP token's recipient") {
		t.Errorf("bounced events %+v", evs)
	}
}

// TestIntakeExpiredToken: a token older than bounces.verp_max_age is
// refused at RCPT with 550 5.1.1; one within it is accepted.
func TestIntakeExpiredToken(t *testing.T) {
	t.Parallel()
	f := intakeFixture(t)
	ctx := context.Background()
	old, err := f.b.mint(ctx, origEnv(), "bob@example.org", t0.Add(-15*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	wantSMTP(t, "expired token", sendBounce(t, f, old, sample(t, "postfix.eml", old)), 550, smtp.EnhancedCode{5, 1, 1})
	future, err := f.b.mint(ctx, origEnv(), "bob@example.org", t0.Add(48*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	wantSMTP(t, "future token", sendBounce(t, f, future, sample(t, "postfix.eml", future)),
		550, smtp.EnhancedCode{5, 1, 1})
	if suppressed(t, f, "bob@example.org") {
		t.Error("expired token suppressed")
	}
	recent, err := f.b.mint(ctx, origEnv(), "bob@example.org", t0.Add(-13*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := sendBounce(t, f, recent, sample(t, "postfix.eml", recent)); err != nil ||
		!suppressed(t, f, "bob@example.org") {
		t.Errorf("13-day-old token: %v, suppressed=%v; want accepted and suppressed",
			err, suppressed(t, f, "bob@example.org"))
	}
}

// legacyVERP mints a token of the previous format (no issue time).
func legacyVERP(f *fixture, qid, rcpt string) string {
	h := rcptHash(rcpt)
	mac := verpMAC(f.b.state().key, qid, "", h)
	return verpPrefix + strings.ToLower(qid) + b32.EncodeToString(h) + b32.EncodeToString(mac) +
		"@" + f.b.state().set.VERPDomain
}

// TestIntakeLegacyToken: a token without issue time is accepted only
// while its KV record exists.
func TestIntakeLegacyToken(t *testing.T) {
	t.Parallel()
	f := intakeFixture(t)
	ctx := context.Background()
	env := origEnv()
	gone := legacyVERP(f, env.ID, "carol@example.org")
	wantSMTP(t, "legacy token without record", sendBounce(t, f, gone, sample(t, "postfix.eml", gone)),
		550, smtp.EnhancedCode{5, 1, 1})
	key := verpRecordKey(env.ID, rcptHash("bob@example.org"))
	if _, err := f.b.kv.Put(ctx, key, []byte("bob@example.org")); err != nil {
		t.Fatal(err)
	}
	live := legacyVERP(f, env.ID, "bob@example.org")
	if err := sendBounce(t, f, live, sample(t, "postfix.eml", live)); err != nil {
		t.Fatalf("legacy token with record: %v", err)
	}
	if !suppressed(t, f, "bob@example.org") {
		t.Error("legacy token with record: 5.1.1 not suppressed")
	}
}

// arf is an RFC 5965 report of the given type; rcptTo "" leaves
// Original-Rcpt-To out (as most feedback loops redact it).
func arf(verp, feedbackType, rcptTo string) string {
	fields := "Feedback-Type: " + feedbackType + "\r\nUser-Agent: ExampleFBL/1.0\r\nVersion: 1\r\n"
	if rcptTo != "" {
		fields += "Original-Rcpt-To: " + rcptTo + "\r\n"
	}
	return "From: fbl@isp.example\r\nTo: " + verp + "\r\nSubject: FW: Your invoice\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/report; report-type=feedback-report; boundary=\"b1\"\r\n\r\n" +
		"--b1\r\nContent-Type: text/plain\r\n\r\nThis is an abuse report.\r\n" +
		"--b1\r\nContent-Type: message/feedback-report\r\n\r\n" + fields + "\r\n" +
		"--b1\r\nContent-Type: text/rfc822-headers\r\n\r\n" +
		"From: App <app@example.com>\r\nSubject: Your invoice\r\n\r\n--b1--\r\n"
}

// TestIntakeARF: an abuse complaint suppresses the token's recipient;
// other feedback types and complaints naming another recipient do not.
func TestIntakeARF(t *testing.T) {
	t.Parallel()
	f := intakeFixture(t)
	cases := []struct {
		rcpt, typ, rcptTo string
		want              bool
	}{
		{"bob@example.org", "abuse", "", true},
		{"carol@example.org", "abuse", "Carol@example.org", true},
		{"dave@example.org", "not-spam", "", false},
		{"erin@example.org", "fraud", "", false},
		{"frank@example.org", "abuse", "sales@example.org", false},
	}
	for _, c := range cases {
		verp := verpOf(t, f.b, origEnv(), c.rcpt)
		if err := sendBounce(t, f, verp, arf(verp, c.typ, c.rcptTo)); err != nil {
			t.Fatalf("%s: %v", c.rcpt, err)
		}
		if got := suppressed(t, f, c.rcpt); got != c.want {
			t.Errorf("%s after %s complaint (Original-Rcpt-To %q): suppressed=%v, want %v", c.rcpt, c.typ, c.rcptTo, got, c.want)
		}
	}
	if evs := f.rec.Find(events.Complaint, nil); len(evs) != len(cases) || evs[0].FeedbackType != "abuse" {
		t.Errorf("complaint events %+v, want %d", evs, len(cases))
	}
	if evs := f.rec.Find(events.Bounced, nil); len(evs) != 0 {
		t.Errorf("bounced events %+v for complaints", evs)
	}
}
