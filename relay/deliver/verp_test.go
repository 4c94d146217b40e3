package deliver_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/bounce"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/relaytest"
)

// VERP end to end with the production Sender (bounce.Bouncer.VERPAddress):
// each recipient gets its own transaction on one connection with MAIL
// FROM:<b+token@verp_domain>, and bounce.ParseVERP maps every token back to
// the queue id and recipient; per-recipient results are unchanged (250
// delivered, 451 retried alone, 550 failed); RSET is sent only after a
// transaction left open by a rejected RCPT; a DSN (null sender) keeps one
// transaction for all its recipients.
func TestVERPSenders(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	m := h.mx()
	h.domain("verp.test", m.IP)
	m.ReplyRcpt("later@verp.test", relaytest.Err(451, "4.2.1", "busy"), 1)
	m.ReplyRcpt("bad@verp.test", relaytest.Err(550, "5.1.1", "no such user"), -1)
	cfg := h.config()
	cfg.Bounces.VERPDomain = "bounces.relay.test"
	b, err := bounce.New(context.Background(), bounce.Options{Settings: bounceSettings(cfg), Queue: h.q,
		Logger: relaytest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	wire := &wireDialer{}
	h.sender, h.dialer = b.VERPAddress, wire
	h.start(cfg)
	rcpts := []string{"ok@verp.test", "later@verp.test", "bad@verp.test", "ok2@verp.test"}
	id := h.send(rcpts)
	relaytest.Eventually(h.t, "settled", func() bool {
		return m.Received("ok@verp.test") == 1 && m.Received("ok2@verp.test") == 1 &&
			m.Received("later@verp.test") == 1 && len(h.rep.failures("bad@verp.test")) == 1
	})
	dsnID := h.send([]string{"x@verp.test", "y@verp.test"}, func(e *queue.Envelope) { e.From = "" })
	relaytest.Eventually(h.t, "DSN delivered", func() bool { return m.Received("x@verp.test") == 1 })

	tokenRE := regexp.MustCompile(`^b\+[0-9a-z]{51}@bounces\.relay\.test$`)
	var firstConn int64
	for _, msg := range m.Messages() {
		switch {
		case msg.From == "":
			if len(msg.Rcpts) != 2 {
				t.Errorf("DSN sent in %d-recipient transactions, want one for both", len(msg.Rcpts))
			}
			continue
		case len(msg.Rcpts) != 1 || !tokenRE.MatchString(msg.From):
			t.Fatalf("MAIL FROM:<%s> for %v, want one VERP sender per recipient", msg.From, msg.Rcpts)
		}
		if msg.Rcpts[0] == "ok@verp.test" {
			firstConn = msg.ConnID
		}
		if msg.Rcpts[0] == "ok2@verp.test" && msg.ConnID != firstConn {
			t.Errorf("ok and ok2 over connections %d and %d, want the same one", firstConn, msg.ConnID)
		}
	}
	// Every MAIL FROM on the wire, accepted or not, maps back to its RCPT.
	mapped := map[string]int{}
	for _, tx := range wire.transactions(t) {
		if tx.from == "" {
			continue
		}
		qid, rcpt, ok := b.ParseVERP(context.Background(), tx.from)
		if !ok || qid != id || rcpt != tx.rcpt {
			t.Errorf("ParseVERP(%s) = %s %s %v, want %s %s", tx.from, qid, rcpt, ok, id, tx.rcpt)
		}
		mapped[rcpt]++
	}
	want := map[string]int{"ok@verp.test": 1, "later@verp.test": 2, "bad@verp.test": 1, "ok2@verp.test": 1}
	for r, n := range want {
		if mapped[r] != n {
			t.Errorf("%s: %d VERP transactions, want %d (all: %v)", r, mapped[r], n, mapped)
		}
	}
	// RSET after the two transactions left open (451 and 550 at RCPT), never
	// after a finished one.
	if n := wire.count("RSET"); n != 2 {
		t.Errorf("%d RSETs, want 2:\n%s", n, wire.dump())
	}
	if wire.follows("DATA", "RSET") {
		t.Errorf("RSET after a finished transaction:\n%s", wire.dump())
	}
	ev := h.deliveries("later@verp.test", "deferred")
	if len(ev) != 1 || ev[0].SMTPEnh != "4.2.1" || ev[0].MX != "mx1.verp.test" {
		t.Errorf("deferred events %v", ev)
	}
	if n := len(h.deliveries("ok@verp.test", "")); n != 1 {
		t.Errorf("%d events for ok@verp.test, want 1", n)
	}
	relaytest.Eventually(h.t, "DSN delivery events", func() bool {
		return len(h.deliveries("y@verp.test", "delivered")) == 1
	})
	if ev := h.deliveries("y@verp.test", "delivered")[0]; ev.QueueID != dsnID {
		t.Errorf("DSN event %v, want queue_id %s", ev, dsnID)
	}
}

// wireDialer records what the engine writes on each (plaintext) connection.
type wireDialer struct {
	relaytest.LoopbackDialer
	mu    sync.Mutex
	conns []*bytes.Buffer
}

func (d *wireDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := d.LoopbackDialer.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	buf := &bytes.Buffer{}
	d.conns = append(d.conns, buf)
	return &wireConn{Conn: c, d: d, buf: buf}, nil
}

type wireConn struct {
	net.Conn
	d   *wireDialer
	buf *bytes.Buffer
}

func (c *wireConn) Write(b []byte) (int, error) {
	c.d.mu.Lock()
	c.buf.Write(b)
	c.d.mu.Unlock()
	return c.Conn.Write(b)
}

// commands returns each connection's command verbs (MAIL, RCPT, DATA,
// RSET, QUIT) with their arguments; body lines are skipped. A pipelined
// DATA (RFC 2920) that the server refused is followed by the next command
// instead of a body: it is dropped, as it opened no body.
func (d *wireDialer) commands() [][]string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out [][]string
	for _, buf := range d.conns {
		var cmds []string
		inData, bodyStart := false, false
		for _, l := range strings.Split(buf.String(), "\r\n") {
			isCmd := strings.HasPrefix(l, "MAIL FROM:") || l == "RSET" || l == "QUIT"
			switch {
			case inData && bodyStart && isCmd:
				cmds = cmds[:len(cmds)-1] // refused DATA
				cmds = append(cmds, l)
				inData, bodyStart = false, false
			case inData:
				inData, bodyStart = l != ".", false
			case l == "DATA":
				bodyStart = true
				inData = true
				cmds = append(cmds, l)
			case strings.HasPrefix(l, "MAIL FROM:"), strings.HasPrefix(l, "RCPT TO:"), l == "RSET", l == "QUIT":
				cmds = append(cmds, l)
			}
		}
		out = append(out, cmds)
	}
	return out
}

// wireTx is a MAIL FROM and the RCPT TO after it.
type wireTx struct{ from, rcpt string }

func (d *wireDialer) transactions(t *testing.T) []wireTx {
	t.Helper()
	addr := regexp.MustCompile(`^(?:MAIL FROM|RCPT TO):<([^>]*)>`)
	var out []wireTx
	for _, cmds := range d.commands() {
		for i, c := range cmds {
			if !strings.HasPrefix(c, "MAIL FROM:") {
				continue
			}
			if i+1 >= len(cmds) || !strings.HasPrefix(cmds[i+1], "RCPT TO:") {
				t.Fatalf("MAIL FROM without RCPT TO: %v", cmds)
			}
			out = append(out, wireTx{from: addr.FindStringSubmatch(c)[1], rcpt: addr.FindStringSubmatch(cmds[i+1])[1]})
		}
	}
	return out
}

func (d *wireDialer) count(verb string) int {
	n := 0
	for _, cmds := range d.commands() {
		for _, c := range cmds {
			if c == verb {
				n++
			}
		}
	}
	return n
}

// follows reports whether b ever comes right after a on a connection.
func (d *wireDialer) follows(a, b string) bool {
	for _, cmds := range d.commands() {
		for i := 1; i < len(cmds); i++ {
			if cmds[i-1] == a && cmds[i] == b {
				return true
			}
		}
	}
	return false
}

func (d *wireDialer) dump() string {
	var sb strings.Builder
	for i, cmds := range d.commands() {
		sb.WriteString("connection " + itoa(i+1) + ":\n  " + strings.Join(cmds, "\n  ") + "\n")
	}
	return sb.String()
}

// bounceSettings is what cmd/jetrelay builds from a configuration.
func bounceSettings(cfg *config.Config) bounce.Settings {
	return bounce.Settings{Bounces: cfg.Bounces, Hostname: cfg.Hostname, From: cfg.BouncesFrom(),
		DataDir: cfg.DataDir, MaxAge: cfg.Delivery.Retry.MaxAge.D()}
}

// TestVERPRecordFailureSendsPlain: when the VERP record cannot be stored,
// the mail still goes, with the plain envelope sender, and is not lost.
func TestVERPRecordFailureSendsPlain(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	m := h.mx()
	h.domain("verp.test", m.IP)
	cfg := h.config()
	cfg.Bounces.VERPDomain = "bounces.relay.test"
	var calls atomic.Int32
	h.sender = func(context.Context, *queue.Envelope, string) (string, error) {
		calls.Add(1)
		return "b+unrecorded@bounces.relay.test", errors.New("kv unavailable") // must not be used
	}
	h.start(cfg)
	h.send([]string{"ok@verp.test"})
	relaytest.Eventually(h.t, "delivered", func() bool { return m.Received("ok@verp.test") == 1 })
	if msgs := m.Messages(); len(msgs) != 1 || msgs[0].From != "a@sender.test" || calls.Load() == 0 {
		t.Fatalf("messages %+v after %d VERP calls: want one from the plain sender", msgs, calls.Load())
	}
}
