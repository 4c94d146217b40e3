package submit

import (
	"fmt"
	"testing"

	"github.com/emersion/go-smtp"
)

// TestOneRefusalOneRejection: a pipelining client whose MAIL is refused
// gets 502s for its RCPTs and DATA, and the log has one event=rejected
// line (the MAIL), not one per reply. A sequence error with no refusal
// before it is still a rejection.
func TestOneRefusalOneRejection(t *testing.T) {
	t.Parallel()
	h := start(t, testConfig(t))
	rejected := func() int { return len(h.logs.events("rejected")) }
	c := h.login(lnImplicit, appUser, appPass)
	before := rejected()
	c.send("MAIL FROM:<a@not-allowed.test>\r\nRCPT TO:<x@one.test>\r\nRCPT TO:<y@one.test>\r\nDATA\r\n")
	if r := c.read(); r.Code != 553 {
		t.Fatalf("MAIL: %v", r)
	}
	for _, what := range []string{"RCPT", "RCPT", "DATA"} {
		if r := c.read(); !isSequenceError(r.Code, enhOf(t, r.Enh)) {
			t.Fatalf("%s after a refused MAIL: %v", what, r)
		}
	}
	c.expect("NOOP", 250, "") // every reply above was written, and logged before it
	if n := rejected() - before; n != 1 {
		t.Fatalf("%d event=rejected lines for one refused MAIL, want 1:\n%v", n, h.logs.events("rejected")[before:])
	}

	// The same when go-smtp refuses the MAIL itself (SIZE= over the limit).
	before = rejected()
	c.send("MAIL FROM:<a@example.com> SIZE=4000000000\r\nRCPT TO:<x@one.test>\r\nDATA\r\n")
	if r := c.read(); r.Code != 552 {
		t.Fatalf("MAIL with SIZE over the limit: %v", r)
	}
	for _, what := range []string{"RCPT", "DATA"} {
		if r := c.read(); !isSequenceError(r.Code, enhOf(t, r.Enh)) {
			t.Fatalf("%s after a refused MAIL: %v", what, r)
		}
	}
	c.expect("NOOP", 250, "")
	if n := rejected() - before; n != 1 {
		t.Fatalf("%d event=rejected lines for one SIZE refusal, want 1", n)
	}

	// The same after every RCPT was refused: DATA's 502 follows from them.
	c.expect("MAIL FROM:<a@example.com>", 250, "")
	before = rejected()
	c.send("RCPT TO:<bad address>\r\nDATA\r\n")
	if r := c.read(); r.Code < 500 {
		t.Fatalf("bad RCPT: %v", r)
	}
	if r := c.read(); !isSequenceError(r.Code, enhOf(t, r.Enh)) {
		t.Fatalf("DATA without recipients: %v", r)
	}
	c.expect("NOOP", 250, "")
	if n := rejected() - before; n != 1 {
		t.Fatalf("%d event=rejected lines for one refused RCPT, want 1", n)
	}

	// RSET ends the transaction: a sequence error after it is a new one.
	c.expect("RSET", 250, "")
	before = rejected()
	if r := c.cmd("RCPT TO:<x@one.test>"); !isSequenceError(r.Code, enhOf(t, r.Enh)) {
		t.Fatalf("RCPT without MAIL: %v", r)
	}
	c.expect("NOOP", 250, "")
	if n := rejected() - before; n != 1 {
		t.Fatalf("RCPT without MAIL: %d event=rejected lines, want 1", n)
	}
}

func enhOf(t *testing.T, s string) (ec smtp.EnhancedCode) {
	t.Helper()
	if _, err := fmt.Sscanf(s, "%d.%d.%d", &ec[0], &ec[1], &ec[2]); err != nil {
		t.Fatalf("enhanced code %q: %v", s, err)
	}
	return ec
}
