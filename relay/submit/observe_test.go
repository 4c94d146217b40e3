package submit

import (
	"bytes"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/relay/relaytest"
)

// countingObserver records the hooks submission calls.
type countingObserver struct{ signs, publishes, open atomic.Int64 }

func (o *countingObserver) ObserveDKIMSign(time.Duration) { o.signs.Add(1) }
func (o *countingObserver) ObservePublish(time.Duration)  { o.publishes.Add(1) }
func (o *countingObserver) Inc()                          { o.open.Add(1) }
func (o *countingObserver) Dec()                          { o.open.Add(-1) }

// TestObserverHooks: signing and publishing are timed once per message and
// the inbound connection gauge returns to zero when clients leave.
func TestObserverHooks(t *testing.T) {
	t.Parallel()
	obs := &countingObserver{}
	h := start(t, testConfig(t), harnessOpts{signer: &recordingSigner{}, observer: obs, conns: obs})
	c := h.login(lnImplicit, appUser, appPass)
	if got := obs.open.Load(); got != 1 {
		t.Fatalf("open connections during a session = %d, want 1", got)
	}
	sendRaw(t, c, "MAIL FROM:<a@example.com>", "RCPT TO:<x@one.test>", message("a@example.com", ""))
	if obs.signs.Load() != 1 || obs.publishes.Load() != 1 {
		t.Fatalf("signs=%d publishes=%d, want 1 each", obs.signs.Load(), obs.publishes.Load())
	}
	c.expect("QUIT", 221, "")
	relaytest.Eventually(t, "connection gauge back to 0", func() bool { return obs.open.Load() == 0 })
}

// TestSetSigner: a signer swapped in (SIGHUP) signs the next message.
func TestSetSigner(t *testing.T) {
	t.Parallel()
	h := start(t, testConfig(t))
	h.srv.SetSigner(&recordingSigner{})
	c := h.login(lnImplicit, appUser, appPass)
	id := sendRaw(t, c, "MAIL FROM:<a@example.com>", "RCPT TO:<x@one.test>", message("a@example.com", ""))
	if b := body(t, h.lease(1)[id+"/one.test"]); !bytes.HasPrefix(b, []byte("DKIM-Signature: v=1;")) {
		t.Fatalf("not signed after SetSigner: %q", b[:min(len(b), 80)])
	}
}
