package submit

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/relaytest"
)

// bigMessage is a valid message of about size octets whose Subject is
// marker.
func bigMessage(marker string, size int) string {
	head := "From: <a@example.com>\r\nTo: x@one.test\r\nSubject: " + marker + "\r\n\r\n"
	line := strings.Repeat("y", 98) + "\r\n"
	return head + strings.Repeat(line, (size-len(head))/len(line))
}

func budgetConfig(inflight config.Size) func(*config.Config) {
	return func(c *config.Config) {
		c.Submission.MaxMessageBytes = 1 << 20
		c.Submission.MaxInflightBytes = inflight
	}
}

// TestInflightBudget: with the budget nearly used up, MAIL with a SIZE= that
// does not fit gets 452 4.3.1; without SIZE= the data is read to the end
// and 452 4.3.1 follows the final dot, nothing is stored, and the same
// connection then sends a message that fits (RFC 5321 §4.3.2).
func TestInflightBudget(t *testing.T) {
	t.Parallel()
	h := start(t, testConfig(t, budgetConfig(2<<20)))
	const taken = 2<<20 - 100<<10 // as if other connections held it
	if !h.srv.inflight.take(taken) {
		t.Fatal("cannot take budget")
	}
	c := h.login(lnImplicit, appUser, appPass)
	c.expect("MAIL FROM:<a@example.com> SIZE=500000", 452, "4.3.1")
	c.expect("MAIL FROM:<a@example.com> SIZE=4000", 250, "")
	c.expect("RCPT TO:<x@one.test>", 250, "")
	c.expect("DATA", 354, "")
	c.send(bigMessage("too-big", 500<<10) + ".\r\n")
	if r := c.read(); r.Code != 452 || r.Enh != "4.3.1" {
		t.Fatalf("end of DATA over the budget: %v, want 452 4.3.1", r)
	}
	if n := h.stored(); n != 0 {
		t.Fatalf("%d messages stored after 452", n)
	}
	c.expect("MAIL FROM:<a@example.com>", 250, "")
	c.expect("RCPT TO:<x@one.test>", 250, "")
	c.expect("DATA", 354, "")
	c.send(message("a@example.com", "") + ".\r\n")
	if r := c.read(); r.Code != 250 {
		t.Fatalf("small message after 452: %v", r)
	}
	if n := h.stored(); n != 1 {
		t.Fatalf("stored %d messages, want 1", n)
	}
	relaytest.Eventually(t, "budget back to what the test holds", func() bool {
		return h.srv.inflight.used.Load() == taken
	})
	if got := len(h.logs.events("rejected")); got < 2 {
		t.Errorf("%d rejected events, want the 452 at MAIL and at DATA logged", got)
	}
}

// TestInflightConcurrent: many connections send large messages at once
// through a budget that holds about two: every transfer ends in 250 or
// 452 4.3.1, exactly the 250 ones are stored, every connection stays
// usable, and the budget is given back in full.
func TestInflightConcurrent(t *testing.T) {
	t.Parallel()
	h := start(t, testConfig(t, budgetConfig(2<<20)))
	const conns, size = 8, 700 << 10
	clients := make([]*rawClient, conns)
	for i := range clients {
		clients[i] = h.login(lnImplicit, appUser, appPass)
	}
	codes := make([]string, conns)
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i] = sendOne(c, bigMessage(fmt.Sprintf("m%d", i), size))
		}()
	}
	wg.Wait()
	ok := map[string]bool{}
	for i, code := range codes {
		switch code {
		case "250":
			ok[fmt.Sprintf("m%d", i)] = true
		case "452 4.3.1":
		default:
			t.Fatalf("connection %d: %s, want 250 or 452 4.3.1", i, code)
		}
	}
	t.Logf("%d of %d accepted, the rest 452 4.3.1", len(ok), conns)
	if n := h.stored(); n != uint64(len(ok)) {
		t.Fatalf("stored %d, accepted %d", n, len(ok))
	}
	if len(ok) > 0 {
		for _, e := range h.lease(len(ok)) {
			b := string(body(t, e))
			i := strings.Index(b, "Subject: ")
			subj := b[i+9 : i+9+strings.Index(b[i+9:], "\r\n")]
			if !ok[subj] {
				t.Errorf("stored message %q was not accepted", subj)
			}
			if len(b) < size-200 {
				t.Errorf("stored message %q is %d octets, sent ~%d", subj, len(b), size)
			}
		}
	}
	for i, c := range clients {
		if code := sendOne(c, bigMessage(fmt.Sprintf("again%d", i), 4<<10)); code != "250" {
			t.Fatalf("connection %d after the burst: %s", i, code)
		}
	}
	relaytest.Eventually(t, "budget given back", func() bool { return h.srv.inflight.used.Load() == 0 })
}

// sendOne sends one transaction in a pipelined write and returns the final
// reply as "250" or "452 4.3.1" (code and enhanced code), or what failed.
func sendOne(c *rawClient, msg string) string {
	if _, err := c.conn.Write([]byte("MAIL FROM:<a@example.com>\r\nRCPT TO:<x@one.test>\r\nDATA\r\n")); err != nil {
		return "write: " + err.Error()
	}
	for _, want := range []int{250, 250, 354} {
		if r, err := c.readErr(); err != nil || r.Code != want {
			return fmt.Sprintf("before data: %v %v", r, err)
		}
	}
	if _, err := c.conn.Write([]byte(msg + ".\r\n")); err != nil {
		return "write: " + err.Error()
	}
	r, err := c.readErr()
	switch {
	case err != nil:
		return err.Error()
	case r.Code == 250:
		return "250"
	}
	return fmt.Sprintf("%d %s", r.Code, r.Enh)
}
