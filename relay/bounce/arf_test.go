package bounce

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// report builds an ARF report: top header, then parts (each "Content-Type
// line\r\n\r\nbody"), boundary "b1".
func report(parts ...string) string {
	s := "From: fbl@isp.example\r\nTo: fbl@relay.test\r\nSubject: complaint\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/report; report-type=feedback-report; boundary=\"b1\"\r\n\r\n"
	for _, p := range parts {
		s += "--b1\r\n" + p + "\r\n"
	}
	return s + "--b1--\r\n"
}

const (
	arfHuman = "Content-Type: text/plain\r\n\r\nThis is an abuse report."
	arfOrig  = "Content-Type: message/rfc822\r\n\r\n" +
		"Return-Path: <b+tok@bounces.relay.test>\r\n" +
		"Received: from mx.relay.test by mx.isp.example; Sat, 14 Mar 2026 09:00:00 +0000\r\n" +
		"Received: from app.example.com ([192.0.2.7])\r\n\tby relay.test (jetrelay) with ESMTPSA\r\n" +
		"\tid 01JRTEST0000000000000A\r\n\tfor <bob@example.org>;\r\n\tSat, 14 Mar 2026 08:59:59 +0000\r\n" +
		"Message-ID: <inv-42@example.com>\r\nTo: Bob <bob@example.org>\r\nSubject: Your invoice\r\n\r\nHello\r\n"
)

func feedbackPart(fields string) string {
	return "Content-Type: message/feedback-report\r\n\r\n" + fields
}

// TestParseARF reads the fields RFC 5965 §3.1 defines and the original's
// identifying header fields.
func TestParseARF(t *testing.T) {
	t.Parallel()
	msg := report(arfHuman, feedbackPart("Feedback-Type: Abuse\r\nUser-Agent: ExampleFBL/1.0\r\nVersion: 1\r\n"+
		"Original-Mail-From: <b+tok@bounces.relay.test>\r\nOriginal-Rcpt-To: <bob@example.org>\r\n"+
		"Original-Rcpt-To: carol@example.org\r\nArrival-Date: Sat, 14 Mar 2026 09:00:00 +0000\r\n"+
		"Reported-Domain: example.com\r\nSource-IP: 192.0.2.1\r\n"), arfOrig)
	r, err := ParseARF([]byte(msg))
	if err != nil {
		t.Fatal(err)
	}
	want := &Report{FeedbackType: "abuse", UserAgent: "ExampleFBL/1.0", Version: "1",
		OriginalMailFrom: "b+tok@bounces.relay.test", OriginalRcptTo: []string{"bob@example.org", "carol@example.org"},
		ArrivalDate: "Sat, 14 Mar 2026 09:00:00 +0000", ReportedDomain: "example.com", SourceIP: "192.0.2.1",
		Original: OriginalHeaders{Present: true, ReturnPath: "b+tok@bounces.relay.test",
			MessageID: "<inv-42@example.com>", To: []string{"bob@example.org"}, Received: []string{
				"from mx.relay.test by mx.isp.example; Sat, 14 Mar 2026 09:00:00 +0000",
				"from app.example.com ([192.0.2.7]) by relay.test (jetrelay) with ESMTPSA id 01JRTEST0000000000000A " +
					"for <bob@example.org>; Sat, 14 Mar 2026 08:59:59 +0000",
			}}}
	if d := cmp.Diff(want, r); d != "" {
		t.Errorf("report (-want +got):\n%s", d)
	}
	if id := r.Original.jetrelayID("relay.test"); id != "01JRTEST0000000000000A" {
		t.Errorf("jetrelayID = %q", id)
	}
	if id := r.Original.jetrelayID("other.test"); id != "" {
		t.Errorf("jetrelayID for another host = %q, want none", id)
	}
	if got := r.Original.receivedFor(); got != "bob@example.org" {
		t.Errorf("receivedFor = %q", got)
	}
	byMsgID := OriginalHeaders{MessageID: "<01JRTEST0000000000000B@Relay.Test>"}
	if id := byMsgID.jetrelayID("relay.test"); id != "01JRTEST0000000000000B" {
		t.Errorf("jetrelayID from Message-ID = %q", id)
	}
	sample, err := os.ReadFile(filepath.Join("testdata", "bounces", "arf_abuse.eml"))
	if err != nil {
		t.Fatal(err)
	}
	if r, err := ParseARF(sample); err != nil || r.FeedbackType != "abuse" || !r.Original.Present {
		t.Errorf("arf_abuse.eml: %+v, %v", r, err)
	}
}

// TestParseARFRefuses: what is not ARF says so; what claims to be ARF
// and cannot be read is malformed, with a reason fit for a reply.
func TestParseARFRefuses(t *testing.T) {
	t.Parallel()
	okFields := feedbackPart("Feedback-Type: abuse\r\n")
	many := make([]string, 11)
	for i := range many {
		many[i] = arfHuman
	}
	many[1] = okFields
	cases := []struct {
		name, msg, reason string // reason "" = errNotARF
	}{
		{"plain text", "From: a@example.com\r\nSubject: hi\r\n\r\nhello\r\n", ""},
		{"DSN", strings.Replace(report(arfHuman), "feedback-report", "delivery-status", 1), ""},
		{"not a message", "\x00\x01", ""},
		{"no feedback part", report(arfHuman, arfOrig), "no message/feedback-report part"},
		{"two feedback parts", report(okFields, okFields), "two message/feedback-report parts"},
		{"no Feedback-Type", report(feedbackPart("User-Agent: x/1\r\n")), "exactly one Feedback-Type"},
		{"two Feedback-Types", report(feedbackPart("Feedback-Type: abuse\r\nFeedback-Type: fraud\r\n")),
			"exactly one Feedback-Type"},
		{"bad type", report(feedbackPart("Feedback-Type: ab use\r\n")), "not a token"},
		{"huge part", report(feedbackPart("Feedback-Type: abuse\r\nX: " + strings.Repeat("a", 17<<10) + "\r\n")),
			"over 16 KiB"},
		{"many fields", report(feedbackPart("Feedback-Type: abuse\r\n" + strings.Repeat("X: y\r\n", 101))),
			"more than 100 fields"},
		{"many parts", report(many...), "more than 10 MIME parts"},
		{"no boundary", strings.Replace(report(okFields), "; boundary=\"b1\"", "", 1), "without a boundary"},
		{"broken MIME", "Content-Type: multipart/report; report-type=feedback-report; boundary=b1\r\n\r\n" +
			"--b1\r\nno colon in this header line\r\n\r\nx\r\n--b1--\r\n", "broken MIME structure"},
		{"broken fields", report(feedbackPart("Feedback-Type: abuse\r\n no colon here\r\n:\r\n")), "header fields"},
	}
	for _, c := range cases {
		_, err := ParseARF([]byte(c.msg))
		var bad *arfError
		switch {
		case c.reason == "" && !errors.Is(err, errNotARF):
			t.Errorf("%s: %v, want errNotARF", c.name, err)
		case c.reason != "" && (!errors.As(err, &bad) || !strings.Contains(bad.reason, c.reason)):
			t.Errorf("%s: %v, want malformed: %s", c.name, err, c.reason)
		}
	}
}

// TestParseARFLenient: what feedback loops really send is read: a
// truncated original, a base64 feedback part, redacted recipients, a
// report without User-Agent or original.
func TestParseARFLenient(t *testing.T) {
	t.Parallel()
	truncated := report(arfHuman, feedbackPart("Feedback-Type: fraud\r\n"))
	truncated = strings.TrimSuffix(truncated, "--b1--\r\n") + "--b1\r\nContent-Type: text/rfc822-headers\r\n\r\n" +
		"Message-ID: <01JRTEST0000000000000B@relay.test>\r\nSubj"
	r, err := ParseARF([]byte(truncated))
	if err != nil || r.FeedbackType != "fraud" || r.Original.MessageID != "<01JRTEST0000000000000B@relay.test>" {
		t.Errorf("truncated original: %+v, %v", r, err)
	}
	b64 := report("Content-Type: message/feedback-report\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
		"RmVlZGJhY2stVHlwZTogbm90LXNwYW0NCk9yaWdpbmFsLVJjcHQtVG86IHJlZGFjdGVkQGV4YW1wbGUub3JnDQo=")
	r, err = ParseARF([]byte(b64))
	if err != nil || r.FeedbackType != "not-spam" || !cmp.Equal(r.OriginalRcptTo, []string{"redacted@example.org"}) ||
		r.Original.Present {
		t.Errorf("base64 feedback part: %+v, %v", r, err)
	}
	for a, want := range map[string]bool{"redacted@example.org": true, "xxxxx@example.org": true,
		"REDACTED-1@example.org": true, "***@example.org": true, "3f2a9c0d5e6b7a81@example.org": true, "bob@example.org": false,
		"rex@example.org": false, "cafe@example.org": false} {
		if redacted(a) != want {
			t.Errorf("redacted(%q) = %v", a, !want)
		}
	}
}

// FuzzParseARF: no input panics; a report's fields stay within bounds and
// its addresses are addresses; every error is errNotARF or malformed.
func FuzzParseARF(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "bounces", "*.eml"))
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(report(arfHuman, feedbackPart("Feedback-Type: abuse\r\nOriginal-Rcpt-To: <a@b.c>\r\n"), arfOrig)))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseARF(data)
		var bad *arfError
		if err != nil {
			if !errors.Is(err, errNotARF) && !errors.As(err, &bad) {
				t.Fatalf("unexpected error type %T: %v", err, err)
			}
			return
		}
		if feedbackToken(r.FeedbackType) != r.FeedbackType || r.FeedbackType == "" {
			t.Fatalf("Feedback-Type %q is not a token", r.FeedbackType)
		}
		for _, s := range []string{r.UserAgent, r.Version, r.ArrivalDate, r.ReportedDomain, r.SourceIP} {
			if len(s) > arfMaxText || strings.ContainsFunc(s, func(c rune) bool { return c < ' ' }) {
				t.Fatalf("field %q unbounded or with control characters", s)
			}
		}
		addrs := append(append([]string{}, r.OriginalRcptTo...), r.Original.To...)
		for _, a := range append(addrs, r.OriginalMailFrom, r.Original.ReturnPath) {
			if a != "" && !validAddr(a) {
				t.Fatalf("invalid address %q", a)
			}
		}
		if len(r.OriginalRcptTo) > maxAddrs || len(r.Original.To) > maxAddrs || len(r.Original.Received) > arfMaxReceived {
			t.Fatalf("unbounded lists: %d %d %d", len(r.OriginalRcptTo), len(r.Original.To), len(r.Original.Received))
		}
		if id := r.Original.jetrelayID("relay.test"); id != "" && len(id) != 22 {
			t.Fatalf("queue id %q", id)
		}
	})
}
