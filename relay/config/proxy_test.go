package config

import (
	"strings"
	"testing"
)

// TestProxyProtocolKeys: proxy_protocol is off and proxy_from empty by
// default; a listener with proxy_protocol needs proxy_from; every bad
// proxy_from entry is reported.
func TestProxyProtocolKeys(t *testing.T) {
	d := Default().Submission
	for _, l := range d.Listeners {
		if l.ProxyProtocol {
			t.Fatalf("default listener %s expects PROXY headers", l.Addr)
		}
	}
	if len(d.ProxyFrom) != 0 {
		t.Fatalf("default proxy_from: %v", d.ProxyFrom)
	}
	c, err := Parse([]byte("submission:\n  listeners:\n" +
		"    - {addr: \":10587\", tls: starttls, proxy_protocol: true}\n" +
		"    - {addr: \":465\", tls: implicit}\n  proxy_from: [10.0.0.5, \"2001:db8::/64\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	s := c.Submission
	if !s.Listeners[0].ProxyProtocol || s.Listeners[1].ProxyProtocol || len(s.ProxyFrom) != 2 {
		t.Fatalf("parsed: %+v", s)
	}
	_, err = Parse([]byte("submission:\n  listeners:\n    - {addr: \":465\", tls: implicit, proxy_protocol: true}\n"))
	if err == nil || !strings.Contains(err.Error(), "submission.listeners[0].proxy_protocol") ||
		!strings.Contains(err.Error(), "proxy_from") {
		t.Fatalf("proxy_protocol without proxy_from: %v", err)
	}
	_, err = Parse([]byte("submission:\n  proxy_from: [10.0.0.0/33, lb.example.com]\n"))
	for _, w := range []string{"submission.proxy_from[0]", "submission.proxy_from[1]"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("error %v\ndoes not mention %s", err, w)
		}
	}
}
