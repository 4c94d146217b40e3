package deliver_test

import (
	"strings"
	"testing"

	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/relaytest"
)

// A smarthost route verifies the certificate unless tls_verify is false:
// a self-signed smarthost defers the mail (kept, not delivered), and the
// delivery event says what happened — "tls":"failed" under
// "tls_policy":"configured" with the certificate error in the reply, not
// "tls":"none". With tls_verify: false the same server gets the mail under
// the same "configured" policy, unverified (tls_verified false).
func TestSmarthostRouteVerifiesByDefault(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	self := relaytest.SelfSigned(t, "smarthost.test")
	strict := h.mx(relaytest.StartTLS(&self))
	lax := h.mx(relaytest.StartTLS(&self))
	h.zone.AddA("smarthost.test", strict.IP)
	h.zone.AddA("lax-smarthost.test", lax.IP)
	cfg := h.config()
	cfg.Delivery.Routes = []config.Route{
		{Domains: []string{"strict.test"}, Host: "smarthost.test:" + itoa(h.port), TLS: "starttls"},
		{Domains: []string{"lax.test"}, Host: "lax-smarthost.test:" + itoa(h.port), TLS: "starttls",
			TLSVerify: new(bool)},
	}
	h.start(cfg)
	id := h.send([]string{"x@strict.test"})
	h.send([]string{"y@lax.test"})

	relaytest.Eventually(h.t, "the strict route deferred", func() bool {
		return len(h.deliveries("x@strict.test", events.StatusDeferred)) >= 1
	})
	ev := h.deliveries("x@strict.test", events.StatusDeferred)[0]
	if ev.TLS != "failed" || ev.TLSPolicy != "configured" || ev.SMTPEnh != "4.7.5" ||
		!strings.Contains(ev.Reply, "certificate") {
		t.Fatalf("deferred event %+v: want tls=failed, tls_policy=configured, 4.7.5 naming the certificate", ev)
	}
	if strict.Received("x@strict.test") != 0 || !h.stored(id) {
		t.Fatalf("unverified smarthost got the mail or it was lost (stored=%v)", h.stored(id))
	}

	relaytest.Eventually(h.t, "the lax route delivered", func() bool {
		return lax.Received("y@lax.test") == 1 && len(h.deliveries("y@lax.test", events.StatusDelivered)) == 1
	})
	ev = h.deliveries("y@lax.test", events.StatusDelivered)[0]
	if !strings.HasPrefix(ev.TLS, "TLS1.") || ev.TLSPolicy != "configured" || ev.TLSVerified == nil || *ev.TLSVerified {
		t.Fatalf("delivered event %+v: want TLS under the configured policy, unverified", ev)
	}
}
