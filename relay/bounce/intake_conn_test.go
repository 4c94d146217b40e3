package bounce

import (
	"bufio"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/jetrelay/jetrelay/relay/config"
)

// limitedIntake starts an intake with the given bounces.intake limits.
func limitedIntake(t *testing.T, in config.BounceIntake) *fixture {
	t.Helper()
	cfg := testConfig(t)
	cfg.Bounces.VERPDomain = "bounces.relay.test"
	cfg.Bounces.Listen = "127.0.0.1:0"
	cfg.Bounces.Intake = in
	f := newFixture(t, cfg)
	if err := f.b.StartIntake(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = f.b.Shutdown(ctx)
	})
	return f
}

// dialFrom connects to the intake from a given loopback address.
func dialFrom(t *testing.T, f *fixture, local string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", f.b.Addr().String())
	if err != nil {
		t.Fatalf("dial from %s: %v", local, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// firstLine reads one reply line (generous deadline: a bound, not a timing).
func firstLine(t *testing.T, r *bufio.Reader, c net.Conn) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	l, err := r.ReadString('\n')
	if err != nil {
		return "error: " + err.Error()
	}
	return strings.TrimRight(l, "\r\n")
}

// TestIntakeIdleFlood: 100 idle connections from one address do not lock
// the listener: beyond max_connections_per_ip they get 421 4.7.0, and a
// legitimate bounce from another address still gets through.
func TestIntakeIdleFlood(t *testing.T) {
	t.Parallel()
	f := limitedIntake(t, config.BounceIntake{MaxConnections: 50, MaxConnectionsPerIP: 5,
		Idle: config.Duration(time.Minute), Session: config.Duration(10 * time.Minute)})
	greeted, refused := 0, 0
	for i := 0; i < 100; i++ {
		c := dialFrom(t, f, "127.0.0.1")
		l := firstLine(t, bufio.NewReader(c), c)
		switch {
		case strings.HasPrefix(l, "220 "):
			greeted++
		case strings.HasPrefix(l, "421 4.7.0 "):
			refused++
		default:
			t.Fatalf("connection %d: %q", i, l)
		}
	}
	if greeted != 5 || refused != 95 {
		t.Errorf("greeted %d, refused %d; want 5 and 95", greeted, refused)
	}
	verp := verpOf(t, f.b, origEnv(), "bob@example.org")
	c := smtp.NewClient(dialFrom(t, f, "127.0.0.2"))
	if err := sendOn(c, verp, sample(t, "postfix.eml", verp)); err != nil {
		t.Fatalf("bounce from another address: %v", err)
	}
	if !suppressed(t, f, "bob@example.org") {
		t.Error("bounce from another address not processed")
	}
}

// TestIntakeTotalCap: over max_connections every address gets 421 4.7.0.
func TestIntakeTotalCap(t *testing.T) {
	t.Parallel()
	f := limitedIntake(t, config.BounceIntake{MaxConnections: 3, MaxConnectionsPerIP: 2,
		Idle: config.Duration(time.Minute), Session: config.Duration(10 * time.Minute)})
	var lines []string
	for _, ip := range []string{"127.0.0.1", "127.0.0.1", "127.0.0.2", "127.0.0.3"} {
		c := dialFrom(t, f, ip)
		lines = append(lines, firstLine(t, bufio.NewReader(c), c))
	}
	if !strings.HasPrefix(lines[2], "220 ") || !strings.HasPrefix(lines[3], "421 4.7.0 too many connections,") {
		t.Errorf("replies %q: want the fourth connection refused with 421 4.7.0", lines)
	}
}

func sendOn(c *smtp.Client, rcpt, msg string) error {
	defer c.Close()
	if err := c.Hello("mx.example.org"); err != nil {
		return err
	}
	return transact(c, rcpt, msg)
}

// lastLine reads one (possibly multi-line) reply and returns its last line.
func lastLine(t *testing.T, r *bufio.Reader, c net.Conn) string {
	t.Helper()
	for {
		l := firstLine(t, r, c)
		if len(l) < 4 || l[3] != '-' {
			return l
		}
	}
}

// chatter sends cmd in a loop until the server ends the session; it
// returns the last reply line. The loop is paced, not synchronised: the
// bound is the overall deadline.
func chatter(t *testing.T, f *fixture, cmds ...string) string {
	t.Helper()
	c := dialFrom(t, f, "127.0.0.1")
	r := bufio.NewReader(c)
	if l := firstLine(t, r, c); !strings.HasPrefix(l, "220 ") {
		t.Fatalf("greeting %q", l)
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(60 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		<-tick.C
		_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		_, werr := c.Write([]byte(cmds[i%len(cmds)] + "\r\n"))
		l := lastLine(t, r, c)
		if strings.HasPrefix(l, "421 ") || strings.HasPrefix(l, "error: ") || werr != nil {
			return l
		}
	}
	t.Fatal("session never cut off")
	return ""
}

// TestIntakeNOOPLoop: NOOP, RSET, HELP and VRFY do not extend the idle
// time: a client that only chatters is cut off with 421 4.4.2.
func TestIntakeNOOPLoop(t *testing.T) {
	t.Parallel()
	f := limitedIntake(t, config.BounceIntake{MaxConnections: 10, MaxConnectionsPerIP: 5,
		Idle: config.Duration(time.Second), Session: config.Duration(10 * time.Minute)})
	l := chatter(t, f, "NOOP", "RSET", "HELP", "VRFY postmaster", "EHLO x.example")
	if !strings.HasPrefix(l, "421 4.4.2") {
		t.Errorf("last reply %q, want 421 4.4.2", l)
	}
}

// TestIntakeSessionCap: a MAIL/RSET loop moves the idle clock but is cut
// off at the session cap.
func TestIntakeSessionCap(t *testing.T) {
	t.Parallel()
	f := limitedIntake(t, config.BounceIntake{MaxConnections: 10, MaxConnectionsPerIP: 5,
		Idle: config.Duration(time.Second), Session: config.Duration(3 * time.Second)})
	if l := chatter(t, f, "MAIL FROM:<>", "RSET"); !strings.HasPrefix(l, "421 4.4.2") {
		t.Errorf("last reply %q, want 421 4.4.2", l)
	}
}

// TestIntakeSizeLimit: a message over submission.max_message_bytes plus
// the slack is refused with 552 5.3.4 and processed not at all.
func TestIntakeSizeLimit(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.Bounces.VERPDomain = "bounces.relay.test"
	cfg.Bounces.Listen = "127.0.0.1:0"
	cfg.Submission.MaxMessageBytes = 1024
	f := newFixture(t, cfg)
	if err := f.b.StartIntake(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = f.b.Shutdown(ctx)
	})
	verp := verpOf(t, f.b, origEnv(), "bob@example.org")
	big := sample(t, "postfix.eml", verp) + strings.Repeat("x", 78) + "\r\n"
	big += strings.Repeat(strings.Repeat("y", 78)+"\r\n", (intakeSlack+2048)/80)
	wantSMTP(t, "oversized bounce", sendBounce(t, f, verp, big), 552, smtp.EnhancedCode{5, 3, 4})
	if suppressed(t, f, "bob@example.org") {
		t.Error("oversized bounce processed")
	}
}

// TestIntakeFinalReplyArrives: a line too long, sent with more input the
// intake never reads, still gets its 500 and then a clean end of file
// (no reset that would swallow the reply).
func TestIntakeFinalReplyArrives(t *testing.T) {
	t.Parallel()
	f := limitedIntake(t, config.BounceIntake{MaxConnections: 10, MaxConnectionsPerIP: 10,
		Idle: config.Duration(time.Minute), Session: config.Duration(time.Minute)})
	c := dialFrom(t, f, "127.0.0.1")
	r := bufio.NewReader(c)
	if l := firstLine(t, r, c); !strings.HasPrefix(l, "220 ") {
		t.Fatalf("greeting %q", l)
	}
	go func() {
		_, _ = c.Write([]byte("NOOP " + strings.Repeat("x", 4000) + "\r\n" + strings.Repeat("y", 32<<10)))
	}()
	if l := firstLine(t, r, c); !strings.HasPrefix(l, "500 5.5.2 ") {
		t.Fatalf("reply to a line too long: %q", l)
	}
	if l := firstLine(t, r, c); l != "error: EOF" {
		t.Fatalf("after the reply: %q, want a clean end of file", l)
	}
}
