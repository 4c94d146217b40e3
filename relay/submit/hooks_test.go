package submit

import (
	"strings"
	"testing"
)

// TestBadVerbClosed: a command verb with control or non-ASCII bytes (which
// go-smtp would echo into its reply, bare CR included) is answered
// 500 5.5.2 and the connection closed; an unknown alphabetic verb only
// gets go-smtp's 500 and the session goes on.
func TestBadVerbClosed(t *testing.T) {
	t.Parallel()
	h := start(t, testConfig(t))
	for _, verb := range []string{"\r000", "\x7f000", "\x1b[2J", "MA\xc3\x8d"} {
		c := h.dialRaw(lnStartTLS)
		r := c.cmd(verb)
		if r.Code != 500 || r.Enh != "5.5.2" || strings.ContainsAny(r.Text, "\r\x7f\x1b") {
			t.Fatalf("verb %q: %v", verb, r)
		}
		if r, err := c.readErr(); err == nil {
			t.Fatalf("verb %q: connection open, got %v", verb, r)
		}
	}
	c := h.dialRaw(lnStartTLS)
	c.expect("XYZW", 500, "5.5.2")
	c.expect("NOOP", 250, "")
}
