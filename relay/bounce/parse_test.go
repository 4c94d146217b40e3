package bounce

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseBounce(t *testing.T) {
	t.Parallel()
	cases := []struct {
		file    string
		wantOK  bool
		wantDSN bool
		want    BouncedRcpt // the first recipient reported
	}{
		{"postfix.eml", true, true, BouncedRcpt{Addr: "bob@example.org", Original: "bob@example.org", Action: "failed",
			Status: "5.1.1", RemoteMTA: "mailstore.example.org",
			Diagnostic: "550 5.1.1 <bob@example.org>: Recipient address rejected: User unknown"}},
		{"qmail.eml", true, false, BouncedRcpt{Addr: "dave@example.net", Action: "failed", Status: "5.1.1",
			Diagnostic: "Sorry, no mailbox here by that name. (#5.1.1)"}},
		{"text550.eml", true, false, BouncedRcpt{Addr: "erin@legacy.example", Action: "failed", Status: "5.0.0",
			Diagnostic: "550 Requested action not taken: mailbox unavailable"}},
		{"delayed_base64.eml", true, true, BouncedRcpt{Addr: "frank@example.org", Action: "delayed", Status: "4.4.1"}},
		{"vacation.eml", false, false, BouncedRcpt{}},
	}
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join("testdata", "bounces", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			b, ok := ParseBounce(raw)
			if ok != tc.wantOK || b.DSN != tc.wantDSN {
				t.Fatalf("ok=%v dsn=%v, want %v %v (%+v)", ok, b.DSN, tc.wantOK, tc.wantDSN, b)
			}
			if !ok {
				return
			}
			if diff := cmp.Diff(tc.want, b.Rcpts[0]); diff != "" {
				t.Errorf("first recipient (-want +got):\n%s", diff)
			}
		})
	}
}

// TestParseOwnDSN: what compose writes, ParseBounce reads back.
func TestParseOwnDSN(t *testing.T) {
	t.Parallel()
	raw, _ := testNotice(ActionFailed, origEnv(), origMsg, rejected("bob@example.org", "rfc822;bob@example.org"),
		rejected("carol@example.org", "")).compose()
	b, ok := ParseBounce(raw)
	if !ok || !b.DSN || len(b.Rcpts) != 2 {
		t.Fatalf("ParseBounce = %+v, %v", b, ok)
	}
	for i, a := range []string{"bob@example.org", "carol@example.org"} {
		r := b.Rcpts[i]
		if r.Addr != a || !r.Permanent() || r.RemoteMTA != "mx1.example.org" ||
			!strings.HasPrefix(r.Diagnostic, "550 5.1.1 <"+a+">") {
			t.Errorf("recipient %d: %+v", i, r)
		}
	}
}

func TestParseBounceHostile(t *testing.T) {
	t.Parallel()
	deep := "Content-Type: multipart/mixed; boundary=a\r\n\r\n"
	for range 50 {
		deep += "--a\r\nContent-Type: multipart/mixed; boundary=a\r\n\r\n"
	}
	many := "Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n\r\n--x\r\n" +
		"Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n" +
		strings.Repeat("\r\nFinal-Recipient: rfc822; a@b.c\r\nAction: failed\r\nStatus: 5.1.1\r\n", 500) + "--x--\r\n"
	for _, in := range []string{
		"", "Subject: x", "Content-Type: ;;;\r\n\r\n5.1.1 a@b.c", deep,
		"Content-Transfer-Encoding: base64\r\n\r\n!!!!", "Content-Type: multipart/report\r\n\r\n--\r\n",
	} {
		ParseBounce([]byte(in)) // must not panic
	}
	b, _ := ParseBounce([]byte(many))
	if len(b.Rcpts) > maxStatusBlock {
		t.Errorf("%d recipient blocks parsed, limit %d", len(b.Rcpts), maxStatusBlock)
	}
}

// FuzzParseBounce: no input makes the parser panic or report an
// address that is not one. Seeds: testdata/fuzz/FuzzParseBounce and the
// sample bounces.
func FuzzParseBounce(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "bounces", "*.eml"))
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		b, ok := ParseBounce(data)
		if ok != (len(b.Rcpts) > 0) {
			t.Fatalf("ok=%v with %d recipients", ok, len(b.Rcpts))
		}
		if len(b.Rcpts) > maxParts*maxStatusBlock+maxAddrs {
			t.Fatalf("%d recipients: unbounded", len(b.Rcpts))
		}
		for _, r := range b.Rcpts {
			if !validAddr(NormalizeAddr(r.Addr)) {
				t.Fatalf("invalid address reported: %q", r.Addr)
			}
		}
		// The rule never suppresses on evidence the parser could not tie
		// to the token's recipient.
		for _, r := range b.Rcpts {
			ev := Evidence{
				Source: SourceDSN, Status: r.Status, Temporary: !r.Permanent(), Reported: r.Addr,
				Token: "token@example.org",
			}
			if ok, _ := ShouldSuppress(ev); ok && NormalizeAddr(r.Addr) != "token@example.org" {
				t.Fatalf("suppressing %q for a token naming token@example.org", r.Addr)
			}
		}
	})
}
