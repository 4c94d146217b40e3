package bounce

import (
	"context"
	"testing"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/outcome"
)

// TestShouldSuppress is the suppression rule, case by case (issue 12
// point 5, issue 14 point 1).
func TestShouldSuppress(t *testing.T) {
	t.Parallel()
	const bob = "bob@example.org"
	cases := []struct {
		name string
		e    Evidence
		want bool
	}{
		{"remote 5.1.1", Evidence{Source: SourceRemote, Status: "5.1.1", Reported: bob}, true},
		{"remote 5.1.0", Evidence{Source: SourceRemote, Status: "5.1.0", Reported: bob}, true},
		{"remote 5.1.6", Evidence{Source: SourceRemote, Status: "5.1.6", Reported: bob}, true},
		{"remote 5.1.2", Evidence{Source: SourceRemote, Status: "5.1.2", Reported: bob}, false},
		{"remote 5.1.3", Evidence{Source: SourceRemote, Status: "5.1.3", Reported: bob}, false},
		{"remote 5.7.1 spam", Evidence{Source: SourceRemote, Status: "5.7.1", Reported: bob}, false},
		{"remote 5.2.2 full", Evidence{Source: SourceRemote, Status: "5.2.2", Reported: bob}, false},
		{"remote temporary 5.1.1", Evidence{Source: SourceRemote, Status: "5.1.1", Temporary: true, Reported: bob}, false},
		{"local NXDOMAIN", Evidence{Source: SourceLocal, Status: "5.1.2", Reported: bob}, false},
		{"local null MX", Evidence{Source: SourceLocal, Status: "5.1.10", Reported: bob}, false},
		{"local no address", Evidence{Source: SourceLocal, Status: "5.4.4", Reported: bob}, false},
		{
			"local 5.1.1 (never generated, still refused)",
			Evidence{Source: SourceLocal, Status: "5.1.1", Reported: bob}, false,
		},
		{"failure of a DSN", Evidence{Source: SourceRemote, Status: "5.1.1", AboutDSN: true, Reported: bob}, false},
		{
			"DSN 5.1.1 token match",
			Evidence{Source: SourceDSN, Status: "5.1.1", Reported: "Bob@Example.org", Token: bob}, true,
		},
		{
			"DSN 5.1.1 other final recipient",
			Evidence{Source: SourceDSN, Status: "5.1.1", Reported: "x@example.org", Token: bob}, false,
		},
		{"DSN 5.1.1 record gone", Evidence{Source: SourceDSN, Status: "5.1.1", Reported: bob}, false},
		{"DSN 5.7.1 late spam verdict", Evidence{Source: SourceDSN, Status: "5.7.1", Reported: bob, Token: bob}, false},
		{"DSN 4.2.2", Evidence{Source: SourceDSN, Status: "4.2.2", Temporary: true, Reported: bob, Token: bob}, false},
		{"text bounce 5.1.1", Evidence{Source: SourceText, Status: "5.1.1", Reported: bob, Token: bob}, false},
		{"ARF abuse", Evidence{Source: SourceARF, FeedbackType: "abuse", Reported: bob, Token: bob}, true},
		{
			"ARF abuse other rcpt",
			Evidence{Source: SourceARF, FeedbackType: "abuse", Reported: "x@example.org", Token: bob}, false,
		},
		{"ARF abuse record gone", Evidence{Source: SourceARF, FeedbackType: "abuse", Reported: bob}, false},
		{"ARF not-spam", Evidence{Source: SourceARF, FeedbackType: "not-spam", Reported: bob, Token: bob}, false},
		{"ARF fraud", Evidence{Source: SourceARF, FeedbackType: "fraud", Reported: bob, Token: bob}, false},
		{"no address", Evidence{Source: SourceRemote, Status: "5.1.1"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, why := ShouldSuppress(c.e)
			if got != c.want || why == "" {
				t.Errorf("ShouldSuppress(%+v) = %v, %q; want %v with a reason", c.e, got, why, c.want)
			}
		})
	}
}

// TestFailedSuppressionRule: Failed suppresses only remote mailbox
// verdicts; a locally generated 5.1.2 (NXDOMAIN, no IP) and the failure
// of a DSN (whose recipient is the original sender) suppress nothing —
// the README's first test send cannot poison later ones (issue 14).
func TestFailedSuppressionRule(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	ctx := context.Background()
	nx := Result{Rcpt: queue.Recipient{Addr: "you@example.com"}, Time: t0,
		Reply: outcome.Reply{Code: 550, Enh: "5.1.2", Text: "recipient domain does not exist (NXDOMAIN)"}}
	if err := f.b.Failed(ctx, origEnv(), []byte(origMsg), []Result{nx}); err != nil {
		t.Fatal(err)
	}
	dsnEnv := &queue.Envelope{ID: "01JRTEST0000000000000D", From: "", Domain: "example.com", IsDSN: true,
		Rcpts: []queue.Recipient{{Addr: "me@example.com", Notify: []string{"NEVER"}}}, Arrival: t0}
	dsnFail := rejected("me@example.com", "")
	if err := f.b.Failed(ctx, dsnEnv, []byte(origMsg), []Result{dsnFail}); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"you@example.com", "me@example.com"} {
		if _, ok, err := f.b.Suppressed(ctx, a); ok || err != nil {
			t.Errorf("%s suppressed (%v, %v)", a, ok, err)
		}
	}
	if err := f.b.Failed(ctx, origEnv(), []byte(origMsg), []Result{rejected("bob@example.org", "")}); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := f.b.Suppressed(ctx, "bob@example.org"); !ok || err != nil {
		t.Errorf("remote 5.1.1 not suppressed (%v, %v)", ok, err)
	}
	spam := rejected("carol@example.org", "")
	spam.Enh = "5.7.1"
	if err := f.b.Failed(ctx, origEnv(), []byte(origMsg), []Result{spam}); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := f.b.Suppressed(ctx, "carol@example.org"); ok {
		t.Error("remote 5.7.1 suppressed")
	}
}
