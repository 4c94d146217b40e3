package main

import (
	"bufio"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/events"
)

// hostileReply is what a receiving server chosen by an attacker answers:
// clear the screen, return the cursor, a C1 CSI and a bidi override.
const hostileReply = "550 5.1.1 \x1b[2Jgone\rOK\u009b31m\u202eevil"

// assertTerminalSafe fails when out holds anything a terminal would act on.
func assertTerminalSafe(t *testing.T, what, out string) {
	t.Helper()
	if !utf8.ValidString(out) {
		t.Fatalf("%s: invalid UTF-8 output", what)
	}
	for _, r := range out {
		if r < 0x20 && r != '\n' || r == 0x7f || r >= 0x80 && r <= 0x9f || r == 0x202e {
			t.Fatalf("%s: output contains %U:\n%q", what, r, out)
		}
	}
}

func TestTprintfEscapesArguments(t *testing.T) {
	var b strings.Builder
	_ = tprintf(&b, "%s|%v|%s|%d\n", "a\x1bb", context.Canceled, queue.State("x\ry"), 7)
	if got, want := b.String(), `a\x1bb|context canceled|x\ry|7`+"\n"; got != want {
		t.Fatalf("tprintf = %q, want %q", got, want)
	}
}

func TestLogsEscapesRemoteText(t *testing.T) {
	t.Parallel()
	o := newOpsEnv(t)
	id := queue.NewID()
	o.em.Emit(&events.Event{Event: events.Delivery, QueueID: id, Rcpt: "u\x1b]0;pwned\x07@example.net",
		Domain: "example.net", MX: "mx\r.example.net", Attempt: 1, Status: events.StatusFailed,
		SMTPCode: 550, SMTPEnh: "5.1.1", Reply: hostileReply})
	waitStored(t, o, 1)

	rc, out, errOut := runOps(t, logsMain, o.args("--id", id)...)
	if rc != 0 {
		t.Fatalf("rc %d: %s", rc, errOut)
	}
	assertTerminalSafe(t, "logs", out)
	for _, want := range []string{`\x1b[2Jgone\rOK\u009b31m\u202eevil`, `u\x1b]0;pwned\x07@example.net`,
		`mx\r.example.net`} {
		if !strings.Contains(out, want) {
			t.Errorf("logs output lacks %q:\n%s", want, out)
		}
	}

	rc, out, errOut = runOps(t, logsMain, o.args("--id", id, "--json")...)
	if rc != 0 {
		t.Fatalf("--json rc %d: %s", rc, errOut)
	}
	assertTerminalSafe(t, "logs --json", out)
	var e events.Event
	if err := json.Unmarshal([]byte(out), &e); err != nil {
		t.Fatalf("logs --json line is not JSON: %v\n%s", err, out)
	}
	if e.Reply != hostileReply {
		t.Fatalf("logs --json changed the reply: %q", e.Reply)
	}
}

func TestQueueShowEscapesRemoteText(t *testing.T) {
	t.Parallel()
	o := newOpsEnv(t)
	env := &queue.Envelope{From: "app\x1b[5m@example.com", Domain: "example.net", Arrival: time.Now().Add(-time.Hour),
		Rcpts:     []queue.Recipient{{Addr: "u\x1b[2J@example.net"}},
		LastReply: queue.Reply{Code: 451, Enh: "4.7.1", Text: hostileReply, MX: "mx\r.example.net"}}
	m := &queue.Message{Body: []byte("Subject: \x1b[2Jhi\r\n\r\nhi\r\n"), Entries: []*queue.Envelope{env}}
	if err := o.q.Enqueue(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	o.em.Emit(&events.Event{Event: events.Delivery, QueueID: m.ID, Rcpt: "u@example.net", Status: events.StatusDeferred,
		SMTPCode: 451, Reply: hostileReply})
	waitStored(t, o, 1)

	cases := [][]string{{"show", m.ID}, {"show", m.ID, "--json"}, {"ls", "--domain", "example.net"}, {"ls", "--json"}}
	for _, args := range cases {
		rc, out, errOut := runOps(t, queueMain, append(args[:1:1], o.args(args[1:]...)...)...)
		if rc != 0 {
			t.Fatalf("queue %v: rc %d: %s", args, rc, errOut)
		}
		assertTerminalSafe(t, strings.Join(args, " "), out)
		if strings.HasSuffix(args[len(args)-1], "json") {
			var v any
			if err := json.Unmarshal([]byte(out), &v); err != nil {
				t.Fatalf("queue %v: not JSON: %v", args, err)
			}
			continue
		}
		if !strings.Contains(out, `\x1b[2Jgone\rOK`) {
			t.Errorf("queue %v: escaped reply missing:\n%s", args, out)
		}
	}
	rc, out, _ := runOps(t, queueMain, append([]string{"show"}, o.args(m.ID)...)...)
	if rc != 0 {
		t.Fatal(rc)
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	var rcptLine bool
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "Recipient:") && strings.Contains(sc.Text(), `u\x1b[2J@example.net`) {
			rcptLine = true
		}
	}
	if !rcptLine {
		t.Fatalf("queue show: escaped recipient missing:\n%s", out)
	}
}

func TestSuppressListEscapesReason(t *testing.T) {
	t.Parallel()
	o := newOpsEnv(t)
	add := append([]string{"add", "x@example.org"}, o.args("--reason", hostileReply)...)
	if rc, _, errOut := runOps(t, suppressMain, add...); rc != 0 {
		t.Fatalf("add: rc %d: %s", rc, errOut)
	}
	rc, out, errOut := runOps(t, suppressMain, append([]string{"ls"}, o.args()...)...)
	if rc != 0 {
		t.Fatalf("ls: rc %d: %s", rc, errOut)
	}
	assertTerminalSafe(t, "suppress ls", out)
	if !strings.Contains(out, `\x1b[2Jgone OK\u009b31m\u202eevil`) { // oneLine folds the CR
		t.Fatalf("escaped reason missing:\n%s", out)
	}
	rc, out, errOut = runOps(t, suppressMain, append([]string{"ls"}, o.args("--json")...)...)
	if rc != 0 {
		t.Fatalf("ls --json: rc %d: %s", rc, errOut)
	}
	assertTerminalSafe(t, "suppress ls --json", out)
	var s struct{ Reason string }
	if err := json.Unmarshal([]byte(out), &s); err != nil || s.Reason != hostileReply {
		t.Fatalf("ls --json: %v, reason %q", err, s.Reason)
	}
}
