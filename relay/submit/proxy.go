package submit

import (
	"cmp"
	"fmt"
	"net"
	"net/netip"

	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/proxyproto"
)

// A listener with proxy_protocol reads the PROXY protocol header of a
// load balancer in submission.proxy_from before anything else (before the
// greeting, before the TLS handshake of an implicit-TLS listener). The
// header's client address replaces the balancer's as the connection's
// RemoteAddr before admit sees it, so per-IP limits, the auth brake,
// trusted_networks, logs, events and the Received: field all use the
// client's address. A v2 LOCAL or v1 UNKNOWN header (balancer health
// checks) leaves the balancer's own address. Connections from elsewhere,
// with a malformed header or none within proxyproto.DefaultTimeout are
// closed without a word (the protocol has no way to answer) and logged.

// proxyFrom parses submission.proxy_from and warns when it is set but no
// listener expects headers.
func (s *Server) proxyFrom() ([]netip.Prefix, error) {
	sub := s.static.Submission
	out := make([]netip.Prefix, 0, len(sub.ProxyFrom))
	for i, n := range sub.ProxyFrom {
		p, err := config.ParseNetwork(n)
		if err != nil {
			return nil, fmt.Errorf("submission.proxy_from[%d]: %q is not a CIDR prefix or IP address", i, n)
		}
		out = append(out, p)
	}
	using := false
	for _, l := range sub.Listeners {
		using = using || l.ProxyProtocol
	}
	if len(out) > 0 && !using {
		s.log.Warn().Str("event", "proxy_from_unused").Strs("proxy_from", sub.ProxyFrom).
			Msg("submission.proxy_from is set but no listener has proxy_protocol: true; no PROXY headers are read")
	}
	return out, nil
}

// wrapProxy wraps ln to read PROXY protocol headers when l asks for them.
func (s *Server) wrapProxy(ln net.Listener, l config.Listener, from []netip.Prefix) net.Listener {
	if !l.ProxyProtocol {
		return ln
	}
	return proxyproto.NewListener(ln, proxyproto.Options{
		Allowed: func(a netip.Addr) bool {
			for _, p := range from {
				if p.Contains(a) {
					return true
				}
			}
			return false
		},
		Timeout: cmp.Or(s.proxyTimeout, proxyproto.DefaultTimeout),
		Refused: s.proxyRefused,
	})
}

// proxyRefused logs a connection closed before its PROXY header was read.
func (s *Server) proxyRefused(peer net.Addr, reason error) {
	ip := ""
	if a, ok := peer.(*net.TCPAddr); ok {
		ip = a.IP.String()
	}
	s.emit(&events.Event{Event: events.Rejected, RemoteAddr: peer.String(), IP: ip,
		Reason: "proxy protocol: " + reason.Error() + "; closed without greeting"})
}
