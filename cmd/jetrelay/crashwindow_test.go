package main

import (
	"context"
	"fmt"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/jetrelay/jetrelay/relay/relaytest"
	"github.com/nats-io/nats.go/jetstream"
)

var crashTag = regexp.MustCompile(`Message-ID: <(cw-\d+)@example\.com>`)

// TestKillAfterDeliveryWindow bounds the duplicate window that limits
// retention opens (queue/sweep.go): an acknowledgement is consumer state,
// written to disk at most 10 times a second, and finished entries are
// purged in bulk. Mail delivered and swept before a kill -9 is never
// delivered again; mail delivered in the last moments may be (at least
// once), and nothing accepted is lost.
func TestKillAfterDeliveryWindow(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	mx := relaytest.FakeMX(t)
	c := writeRelayConfig(t)
	c.mx = mx.Addr // deliver to the fake MX
	c.write(t, c.userLine(t, c.user, c.pass))
	p := startRelay(t, c.cfgPath, c.subAddr)
	send := func(from, to int) {
		for i := from; i < to; i++ {
			submitOne(t, c, []byte(fmt.Sprintf("From: app@example.com\r\nTo: user@example.net\r\nSubject: cw %d\r\n"+
				"Message-ID: <cw-%d@example.com>\r\n\r\nbody %d\r\n", i, i, i)))
		}
	}
	count := func() map[string][]time.Time {
		out := map[string][]time.Time{}
		for _, m := range mx.Messages() {
			if g := crashTag.FindSubmatch(m.Body); g != nil {
				out[string(g[1])] = append(out[string(g[1])], m.At)
			}
		}
		return out
	}
	const first, second = 20, 20
	send(0, first)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("relay log:\n%s", p.logs.String())
		}
	})
	queuetest.Eventually(t, 60*time.Second, "the first batch delivered", func() bool { return len(count()) == first })
	// Swept: no finished entry left on jr.q (the purge is stored before
	// it is answered, so these cannot come back).
	js := embeddedJetStream(t, c)
	queuetest.Eventually(t, 60*time.Second, "the first batch swept", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, queue.StreamName)
		if err != nil {
			return false
		}
		info, err := s.Info(ctx, jetstream.WithSubjectFilter(queue.SubjReady+".>"))
		return err == nil && info.State.Msgs == 0
	})
	send(first, first+second)
	queuetest.Eventually(t, 60*time.Second, "part of the second batch delivered", func() bool {
		return len(count()) >= first+second/2
	})
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killedAt := time.Now()
	_, _ = p.cmd.Process.Wait()

	startRelay(t, c.cfgPath, c.subAddr)
	queuetest.Eventually(t, 90*time.Second, "every accepted message delivered", func() bool {
		return len(count()) == first+second
	})
	dups := 0
	for tag, at := range count() {
		var n int
		fmt.Sscanf(tag, "cw-%d", &n)
		if len(at) > 1 {
			dups += len(at) - 1
			if n < first {
				t.Errorf("%s delivered %d times: it was delivered and swept before the kill", tag, len(at))
			}
			if d := killedAt.Sub(at[0]); d > 10*time.Second {
				t.Errorf("%s delivered again, first delivered %s before the kill", tag, d)
			}
		}
	}
	t.Logf("second batch: %d duplicates after kill -9 (at-least-once)", dups)
}
