package submit

import (
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/relay/config"
)

// TestPreAuthSessionLimit: before AUTH, timeouts.pre_auth.session ends even
// a busy connection (421 4.4.2), although timeouts.session is long.
func TestPreAuthSessionLimit(t *testing.T) {
	t.Parallel()
	h := start(t, testConfig(t, func(c *config.Config) {
		c.Submission.Timeouts.PreAuth.Session = config.Duration(time.Second)
		c.Submission.MaxIdleCommands = 1 << 30
	}))
	c := h.dialRaw(lnImplicit)
	deadline := time.Now().Add(testTimeout)
	for time.Now().Before(deadline) {
		c.send("NOOP\r\n")
		r, err := c.readErr()
		if err != nil {
			t.Fatalf("connection closed without a reply: %v", err)
		}
		if r.Code == 421 {
			if r.Enh != "4.4.2" || !strings.Contains(r.Text, "authenticating") {
				t.Fatalf("got %v, want 421 4.4.2 naming the pre-auth limit", r)
			}
			return
		}
	}
	t.Fatal("pre-auth session never ended")
}

// TestPreAuthIdleLimit: before AUTH, timeouts.pre_auth.idle closes a
// silent connection although timeouts.idle is long.
func TestPreAuthIdleLimit(t *testing.T) {
	t.Parallel()
	h := start(t, testConfig(t, func(c *config.Config) {
		c.Submission.Timeouts.PreAuth.Idle = config.Duration(500 * time.Millisecond)
	}))
	c := h.dialRaw(lnImplicit)
	c.expect("EHLO client.test", 250, "")
	for {
		r, err := c.readErr() // a 421 line, then the close; or only the close
		if err != nil {
			return
		}
		if r.Code != 421 {
			t.Fatalf("idle pre-auth connection got %v, want 421 or a close", r)
		}
	}
}

// TestAuthEndsPreAuthLimits: after AUTH the connection runs under
// timeouts.session, counted from its start.
func TestAuthEndsPreAuthLimits(t *testing.T) {
	t.Parallel()
	h := start(t, testConfig(t, func(c *config.Config) {
		c.Submission.Timeouts.PreAuth.Session = config.Duration(time.Minute)
	}))
	c := h.login(lnImplicit, appUser, appPass)
	c.expect("NOOP", 250, "")
	conns := h.srv.conns.snapshot()
	if len(conns) != 1 {
		t.Fatalf("%d connections open, want 1", len(conns))
	}
	for tc := range conns {
		tc.mu.Lock()
		authed, end, started := tc.authed, tc.sessionEnd, tc.started
		tc.mu.Unlock()
		if !authed || !end.Equal(started.Add(h.cfg.Submission.Timeouts.Session.D())) {
			t.Fatalf("after AUTH: authed=%v, session ends %v after start, want %v",
				authed, end.Sub(started), h.cfg.Submission.Timeouts.Session.D())
		}
	}
}
