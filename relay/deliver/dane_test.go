package deliver_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/relaytest"
	"github.com/jetrelay/jetrelay/relay/smtpclient"
)

// DANE end to end (RFC 7672) with delivery.dns.dnssec: trust_ad: the first
// MX's certificate does not match its TLSA record, so the mail goes to the
// second MX, whose does, and the delivery event says tls_policy dane,
// tls_verified; a domain whose only MX mismatches is deferred (451 4.7.5,
// tls_failure validation-failure) and stays stored, nothing sent.
func TestDANEDelivery(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	bad, good := relaytest.SelfSigned(t, "mx1.dane.test"), relaytest.SelfSigned(t, "mx2.dane.test")
	mx1, mx2 := h.mx(relaytest.StartTLS(&bad)), h.mx(relaytest.StartTLS(&good))
	h.domain("dane.test", mx1.IP, mx2.IP)
	h.domain("danefail.test", mx1.IP)
	for _, host := range []string{"mx1.dane.test", "mx1.danefail.test"} {
		h.zone.AddTLSA(fmt.Sprintf("_%d._tcp.%s", h.port, host), 3, 1, 1, relaytest.SPKISHA256(good.Leaf))
	}
	h.zone.AddTLSA(fmt.Sprintf("_%d._tcp.mx2.dane.test", h.port), 3, 1, 1, relaytest.SPKISHA256(good.Leaf))
	h.zone.SetSecure("dane.test", true)
	h.zone.SetSecure("danefail.test", true)
	h.wrapRes = func(smtpclient.Resolver) smtpclient.Resolver {
		r, err := smtpclient.NewResolver(smtpclient.DNSOptions{Servers: []string{h.dns}, Timeout: time.Second,
			LoopbackOnly: true, TrustAD: true})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	cfg := h.config()
	cfg.Delivery.DNS.DNSSEC = "trust_ad"
	h.start(cfg)
	h.send([]string{"x@dane.test"})
	failID := h.send([]string{"y@danefail.test"})

	relaytest.Eventually(t, "delivered to the matching MX", func() bool {
		return len(h.deliveries("x@dane.test", events.StatusDelivered)) == 1
	})
	ev := h.deliveries("x@dane.test", events.StatusDelivered)[0]
	if ev.TLSPolicy != "dane" || ev.TLSVerified == nil || !*ev.TLSVerified || ev.MX != "mx2.dane.test" ||
		mx2.Received("x@dane.test") != 1 || mx1.Received("x@dane.test") != 0 {
		t.Fatalf("delivered event %+v: want mx2 under tls_policy dane, verified, and mx1 sent nothing", ev)
	}
	relaytest.Eventually(t, "the mismatching domain deferred", func() bool {
		return len(h.deliveries("y@danefail.test", events.StatusDeferred)) >= 1
	})
	ev = h.deliveries("y@danefail.test", events.StatusDeferred)[0]
	if ev.SMTPEnh != "4.7.5" || ev.TLSPolicy != "dane" || ev.TLSFailure != "validation-failure" {
		t.Fatalf("deferred event %+v: want 4.7.5, tls_policy dane, tls_failure validation-failure", ev)
	}
	if mx1.Received("y@danefail.test") != 0 || !h.stored(failID) {
		t.Fatalf("mismatching MX got the mail or it was lost (stored=%v)", h.stored(failID))
	}
}
