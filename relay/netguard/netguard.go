// Package netguard decides which IP addresses jetrelay may dial when the
// destination was chosen by someone outside: an MX host named by a recipient
// domain, or any other fetch whose host a recipient domain picks (MTA-STS
// policies, TLS-RPT https: endpoints). Without it, "MX 10 localhost." or an
// MX resolving to 10.x makes the relay talk to internal services, turning a
// local MTA that trusts loopback into an open relay (issue 12 point 3).
//
// A Guard holds a denied list and an allowed list of networks. An address is
// refused when it lies in a denied network and in no allowed network: the
// allowed list punches holes, and "allowed wins" regardless of prefix length
// (allowing 10.1.0.0/16 opens that /16 inside the denied 10.0.0.0/8; allowing
// 0.0.0.0/0 opens everything). IPv4-mapped IPv6 addresses (::ffff:a.b.c.d)
// are unmapped before matching, and configured ::ffff:0:0/96 prefixes are
// turned into their IPv4 form, so a mapped address is judged exactly like the
// IPv4 address it carries. IPv6 zones (fe80::1%eth0) are ignored for matching.
//
// The check belongs at connect time: Guard.Control is a net.Dialer Control
// hook that sees the address the socket is about to connect to, after name
// resolution, so a name that resolves to a public address at lookup and to
// 127.0.0.1 a moment later (DNS rebinding) cannot slip past. Guard.Dialer
// installs it. A refusal is a *DeniedError whose Error text does not contain
// the address (it may reach a sender in a DSN); its Addr field is for logs.
// net.Dialer wraps it in a *net.OpError whose text does name the address, so
// callers find it with errors.As and build their reply from the DeniedError,
// never from the wrapped error's text.
//
// Routes to smarthosts are not guarded: their address is the operator's
// choice. A nil *Guard permits every address, which is how a caller says
// "not guarded" explicitly.
package netguard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
)

// DeniedError says that an address lies in a denied network.
type DeniedError struct {
	// Addr is the refused address (unmapped, zone kept) — for logs only.
	Addr netip.Addr
	// Network is the denied network it matched — for logs only.
	Network netip.Prefix
}

// Error returns a fixed text without the address, safe for SMTP replies and
// DSNs.
func (e *DeniedError) Error() string { return "address is in a denied network" }

// Detail names the address and the network, for log lines only.
func (e *DeniedError) Detail() string {
	if !e.Addr.IsValid() {
		return "invalid address"
	}
	return fmt.Sprintf("%s is in denied network %s", e.Addr, e.Network)
}

// Guard refuses addresses in denied networks unless an allowed network
// contains them. It is immutable and safe for concurrent use.
type Guard struct {
	denied  []netip.Prefix
	allowed []netip.Prefix
}

// New returns a Guard refusing denied minus allowed. Prefixes are
// normalised (masked; IPv4-mapped prefixes become IPv4 prefixes).
func New(denied, allowed []netip.Prefix) *Guard {
	return &Guard{denied: normalizeAll(denied), allowed: normalizeAll(allowed)}
}

// Parse builds a Guard from configuration strings (see ParsePrefixes). All
// problems of both lists are reported at once.
func Parse(denied, allowed []string) (*Guard, error) {
	d, errD := ParsePrefixes(denied)
	a, errA := ParsePrefixes(allowed)
	if err := errors.Join(errD, errA); err != nil {
		return nil, err
	}
	return New(d, a), nil
}

// Denied returns a copy of the denied networks.
func (g *Guard) Denied() []netip.Prefix {
	if g == nil {
		return nil
	}
	return append([]netip.Prefix(nil), g.denied...)
}

// Allowed returns a copy of the allowed networks.
func (g *Guard) Allowed() []netip.Prefix {
	if g == nil {
		return nil
	}
	return append([]netip.Prefix(nil), g.allowed...)
}

// Check returns nil when ip may be dialled and a *DeniedError when it may
// not. An invalid (zero) address is refused. A nil Guard permits everything.
func (g *Guard) Check(ip netip.Addr) error {
	if g == nil {
		return nil
	}
	if !ip.IsValid() {
		return &DeniedError{Addr: ip}
	}
	m := ip.Unmap().WithZone("")
	for _, p := range g.allowed {
		if p.Contains(m) {
			return nil
		}
	}
	for _, p := range g.denied {
		if p.Contains(m) {
			return &DeniedError{Addr: ip.Unmap(), Network: p}
		}
	}
	return nil
}

// Control has the signature of net.Dialer.Control and refuses the connection
// before it is made when the address is denied. address is what the dialer
// connects to: "ip:port" (IPv6 in brackets, possibly with a zone). Networks
// other than tcp*, udp* and ip* (such as unix) are not IP and pass; an IP
// network whose address does not parse is refused.
func (g *Guard) Control(network, address string, _ syscall.RawConn) error {
	if g == nil || !isIPNetwork(network) {
		return nil
	}
	ip, err := dialAddr(address)
	if err != nil {
		return err
	}
	return g.Check(ip)
}

// Dialer returns a copy of base (a zero net.Dialer when base is nil) whose
// connections pass Check first. An existing Control or ControlContext hook of
// base still runs, after the guard. base itself is not modified. For HTTP
// fetches use the returned dialer's DialContext as http.Transport.DialContext
// (and no proxy, which would dial instead).
func (g *Guard) Dialer(base *net.Dialer) *net.Dialer {
	d := &net.Dialer{}
	if base != nil {
		*d = *base
	}
	if g == nil {
		return d
	}
	if next := d.ControlContext; next != nil {
		d.ControlContext = chainContext(g, next)
		return d
	}
	next := d.Control
	d.Control = func(network, address string, c syscall.RawConn) error {
		if err := g.Control(network, address, c); err != nil {
			return err
		}
		if next != nil {
			return next(network, address, c)
		}
		return nil
	}
	return d
}

func isIPNetwork(network string) bool {
	for _, p := range []string{"tcp", "udp", "ip"} {
		if strings.HasPrefix(network, p) {
			return true
		}
	}
	return false
}

// dialAddr parses the address a dialer hands to Control: "ip:port",
// "[ipv6%zone]:port", or a bare IP (raw ip networks have no port).
func dialAddr(address string) (netip.Addr, error) {
	host := address
	if h, _, err := net.SplitHostPort(address); err == nil {
		host = h
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("netguard: dial address %q is not an IP address", address)
	}
	return ip, nil
}

// controlContext is the type of net.Dialer.ControlContext.
type controlContext = func(ctx context.Context, network, address string, c syscall.RawConn) error

func chainContext(g *Guard, next controlContext) controlContext {
	return func(ctx context.Context, network, address string, c syscall.RawConn) error {
		if err := g.Control(network, address, c); err != nil {
			return err
		}
		return next(ctx, network, address, c)
	}
}
