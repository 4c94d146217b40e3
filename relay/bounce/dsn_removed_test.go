package bounce

import (
	"strings"
	"testing"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/outcome"
)

// TestComposeRemoved: the DSN for an operator's delete says an operator
// removed the message, names no receiving server and quotes no SMTP
// diagnostic; on the wire it is an ordinary failure (RFC 3464 §2.3.3).
func TestComposeRemoved(t *testing.T) {
	env := origEnv()
	rs := make([]Result, len(env.Rcpts))
	for i, r := range env.Rcpts {
		rs[i] = Result{Rcpt: r, Status: outcome.Failed, Reply: outcome.Reply{Enh: RemovedEnh}, Time: t0}
	}
	raw, _ := testNotice(actionRemoved, env, origMsg, rs...).compose()
	golden(t, "dsn_removed", raw)
	d := parseDSN(t, raw)
	checkHeaders(t, d)
	human := strings.Join(strings.Fields(d.human), " ")
	for _, want := range []string{"removed from the queue by an operator", "<bob@example.org>: removed"} {
		if !strings.Contains(human, want) {
			t.Errorf("human part lacks %q:\n%s", want, d.human)
		}
	}
	for _, bad := range []string{"rejected", "receiving server, which", "which said"} {
		if strings.Contains(human, bad) {
			t.Errorf("human part says %q:\n%s", bad, d.human)
		}
	}
	if len(d.rcpts) != 2 {
		t.Fatalf("%d recipient blocks, want 2", len(d.rcpts))
	}
	for _, h := range d.rcpts {
		if h.Get("Action") != ActionFailed || h.Get("Status") != RemovedEnh || h.Get("Diagnostic-Code") != "" ||
			h.Get("Remote-Mta") != "" {
			t.Errorf("recipient block %v", h)
		}
	}
	if !strings.HasPrefix(d.header.Get("Subject"), "Undelivered mail: removed from the queue") {
		t.Errorf("Subject %q", d.header.Get("Subject"))
	}
	if !wants(queue.Recipient{Addr: "x@example.org"}, actionRemoved) ||
		wants(queue.Recipient{Addr: "x@example.org", Notify: []string{"NEVER"}}, actionRemoved) {
		t.Error("NOTIFY is not honoured for an operator's removal (RFC 3461 §4.1)")
	}
}
