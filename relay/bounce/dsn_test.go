package bounce

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/outcome"
)

const origMsg = "Received: from app.example.com by relay.test\r\n" +
	"From: App <app@example.com>\r\n" +
	"To: bob@example.org, carol@example.org\r\n" +
	"Subject: Your invoice\r\n" +
	"Message-ID: <inv-42@example.com>\r\n" +
	"Date: Sat, 14 Mar 2026 08:00:00 +0000\r\n" +
	"\r\n" +
	"Hello Bob,\r\nyour invoice is attached.\r\n"

func origEnv() *queue.Envelope {
	return &queue.Envelope{
		ID: "01JRTEST0000000000000A", MsgID: "<inv-42@example.com>", From: "app@example.com",
		Domain: "example.org", Arrival: t0.Add(-2 * time.Hour), EnvID: "inv-42",
		Rcpts: []queue.Recipient{
			{Addr: "bob@example.org", ORCPT: "rfc822;bob@example.org"},
			{Addr: "carol@example.org"},
		},
	}
}

func rejected(addr, orcpt string) Result {
	return Result{
		Rcpt: queue.Recipient{Addr: addr, ORCPT: orcpt}, Reply: outcome.Reply{Code: 550, Enh: "5.1.1",
			Text: "5.1.1 <" + addr + ">: Recipient address rejected: User unknown in virtual mailbox table"},
		MX: "mx1.example.org", IP: "127.0.0.2", Time: t0.Add(-time.Minute),
	}
}

func testNotice(action string, env *queue.Envelope, body string, rcpts ...Result) *notice {
	return &notice{
		id: "01DSN00000000000000000", action: action, env: env, body: []byte(body), rcpts: rcpts,
		now: t0, hostname: "relay.test", from: "MAILER-DAEMON@relay.test", maxAge: 48 * time.Hour,
		retMax: 1 << 10,
	}
}

// TestCompose checks each kind of DSN against its golden file and parses
// it back, field by field (RFC 3464 §2.2, §2.3; RFC 6522 §3).
func TestCompose(t *testing.T) {
	full := origEnv()
	full.Ret = "FULL"
	expired := rejected("bob@example.org", "")
	expired.Code, expired.Enh, expired.Temporary = 451, "4.7.1", true
	expired.Text = "4.7.1 Greylisted, try again later"
	cases := []struct {
		name, action, ret, body string
		rcpts                   []Result
		wantOrigType            string
		wantStatus              []string
	}{
		{
			"failed_hdrs", ActionFailed, "", origMsg, []Result{rejected("bob@example.org", "rfc822;bob@example.org")},
			"text/rfc822-headers", []string{"5.1.1"},
		},
		{
			"failed_full", ActionFailed, "FULL", origMsg, []Result{rejected("bob@example.org", "")},
			"message/rfc822", []string{"5.1.1"},
		},
		{
			"failed_full_cut", ActionFailed, "FULL", origMsg + strings.Repeat("x", 2000) + "\r\n",
			[]Result{rejected("bob@example.org", "")}, "text/rfc822-headers", []string{"5.1.1"},
		},
		{"expired", ActionFailed, "", origMsg, []Result{expired}, "text/rfc822-headers", []string{"4.7.1"}},
		{"delayed", ActionDelayed, "FULL", origMsg, []Result{expired}, "text/rfc822-headers", []string{"4.7.1"}},
		{
			"two_rcpts", ActionFailed, "", origMsg,
			[]Result{rejected("bob@example.org", ""), rejected("carol@example.org", "")},
			"text/rfc822-headers", []string{"5.1.1", "5.1.1"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := origEnv()
			env.Ret = tc.ret
			raw, eightBit := testNotice(tc.action, env, tc.body, tc.rcpts...).compose()
			golden(t, "dsn_"+tc.name, raw)
			if eightBit {
				t.Error("ASCII input gave an 8-bit DSN")
			}
			d := parseDSN(t, raw)
			checkHeaders(t, d)
			checkPerMessage(t, d)
			if len(d.rcpts) != len(tc.rcpts) {
				t.Fatalf("%d recipient blocks, want %d", len(d.rcpts), len(tc.rcpts))
			}
			for i, r := range tc.rcpts {
				checkRecipient(t, d.rcpts[i], r, tc.action, tc.wantStatus[i])
				if !strings.Contains(strings.Join(strings.Fields(d.human), " "), r.Text) {
					t.Errorf("human part does not quote the reply %q:\n%s", r.Text, d.human)
				}
			}
			if !strings.HasPrefix(d.origType, tc.wantOrigType) {
				t.Errorf("third part is %q, want %q", d.origType, tc.wantOrigType)
			}
			checkReturned(t, d, tc.wantOrigType, tc.body)
			if tc.name == "failed_full_cut" && !strings.Contains(d.human, "only its headers are attached") {
				t.Errorf("cut RET=FULL not explained:\n%s", d.human)
			}
		})
	}
}

func checkHeaders(t *testing.T, d dsn) {
	t.Helper()
	for k, want := range map[string]string{
		"From": "Mail Delivery System <MAILER-DAEMON@relay.test>", "To": "<app@example.com>",
		"Auto-Submitted": "auto-replied", "Date": "Sat, 14 Mar 2026 09:26:53 +0000",
		"Message-Id": "<01DSN00000000000000000.dsn@relay.test>", "In-Reply-To": "<inv-42@example.com>",
	} {
		if got := d.header.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	if d.header.Get("Subject") == "" {
		t.Error("no Subject")
	}
}

func checkPerMessage(t *testing.T, d dsn) {
	t.Helper()
	for k, want := range map[string]string{
		"Reporting-Mta": "dns; relay.test", "Original-Envelope-Id": "inv-42",
		"Arrival-Date": "Sat, 14 Mar 2026 07:26:53 +0000",
	} {
		if got := d.perMsg.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
}

func checkRecipient(t *testing.T, h map[string][]string, r Result, action, wantStatus string) {
	t.Helper()
	get := func(k string) string {
		if v := h[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	want := map[string]string{
		"Final-Recipient": "rfc822; " + r.Rcpt.Addr, "Action": action, "Status": wantStatus,
		"Remote-Mta": "dns; " + r.MX, "Diagnostic-Code": "smtp; " + strconv.Itoa(r.Code) + " " + r.Text,
		"Last-Attempt-Date": r.Time.Format(dateLayout), "Original-Recipient": r.Rcpt.ORCPT,
	}
	for k, w := range want {
		if got := get(k); got != w {
			t.Errorf("%s: %q, want %q", k, got, w)
		}
	}
}

func checkReturned(t *testing.T, d dsn, typ, body string) {
	t.Helper()
	hdrs := body[:strings.Index(body, "\r\n\r\n")+2]
	switch typ {
	case "message/rfc822":
		if string(d.orig) != body {
			t.Errorf("returned message differs:\n%q\nwant\n%q", d.orig, body)
		}
	default:
		if string(d.orig) != hdrs {
			t.Errorf("returned headers differ:\n%q\nwant\n%q", d.orig, hdrs)
		}
	}
}

func TestComposeEightBitAndBoundary(t *testing.T) {
	env := origEnv()
	env.Ret = "FULL"
	body := "Subject: caf\xc3\xa9\r\n\r\n--=_jetrelay-dsn-01DSN00000000000000000\r\n"
	r := rejected("bob@example.org", "")
	r.Text = "5.1.1 Benutzer unbekannt: M\xc3\xbcller"
	raw, eightBit := testNotice(ActionFailed, env, body, r).compose()
	if !eightBit {
		t.Error("8-bit message not reported")
	}
	d := parseDSN(t, raw) // fails if the boundary collided with the content
	if string(d.orig) != body {
		t.Errorf("returned message %q, want %q", d.orig, body)
	}
	if !strings.Contains(d.human, "M\xc3\xbcller") {
		t.Errorf("human part lost the UTF-8 reply: %q", d.human)
	}
}

func TestFold(t *testing.T) {
	long := "Diagnostic-Code: smtp; 550 5.1.1 " + strings.Repeat("word ", 40) + strings.Repeat("y", 100)
	got := fold(long)
	for _, l := range strings.Split(got, "\r\n")[1:] {
		if !strings.HasPrefix(l, " ") || strings.TrimSpace(l) == "" {
			t.Errorf("bad continuation line %q", l)
		}
	}
	if unfolded := strings.ReplaceAll(got, "\r\n", ""); unfolded != strings.Join(strings.Fields(long), " ") {
		t.Errorf("folding changed the content: %q", unfolded)
	}
	if !bytes.Equal([]byte(fold("short: x")), []byte("short: x")) {
		t.Error("short line changed")
	}
}
