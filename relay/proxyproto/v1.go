package proxyproto

import (
	"bytes"
	"net/netip"
	"strconv"
	"strings"
)

// parseV1 parses a text header (spec §2.1):
//
//	"PROXY" SP ( "TCP4" | "TCP6" ) SP src SP dst SP sport SP dport CRLF
//	"PROXY" SP "UNKNOWN" [ anything ] CRLF
//
// The whole line is at most MaxV1Line bytes with its CRLF.
func parseV1(b []byte) (Header, int, error) {
	end := bytes.IndexByte(b[:min(len(b), MaxV1Line)], '\n')
	if end < 0 {
		if len(b) >= MaxV1Line {
			return Header{}, 0, invalid("v1 line over %d bytes", MaxV1Line)
		}
		if i := bytes.IndexByte(b, '\r'); i >= 0 && i < len(b)-1 {
			return Header{}, 0, invalid("v1 line has a CR not followed by LF")
		}
		return Header{}, 0, ErrIncomplete
	}
	if end == 0 || b[end-1] != '\r' {
		return Header{}, 0, invalid("v1 line does not end in CRLF")
	}
	line := string(b[:end-1])
	h, err := parseV1Line(line)
	if err != nil {
		return Header{}, 0, err
	}
	return h, end + 1, nil
}

func parseV1Line(line string) (Header, error) {
	h := Header{Version: 1}
	f := strings.Split(line, " ")
	if len(f) >= 2 && f[1] == "UNKNOWN" { // the rest of the line is ignored
		return h, nil
	}
	if len(f) != 6 {
		return Header{}, invalid("v1 line has %d fields, want 6", len(f))
	}
	switch f[1] {
	case "TCP4":
		h.Transport = TCP4
	case "TCP6":
		h.Transport = TCP6
	default:
		return Header{}, invalid("v1 protocol %q, want TCP4, TCP6 or UNKNOWN", f[1])
	}
	src, err1 := parseV1Addr(f[2], h.Transport)
	dst, err2 := parseV1Addr(f[3], h.Transport)
	sport, err3 := parseV1Port(f[4])
	dport, err4 := parseV1Port(f[5])
	for _, err := range []error{err1, err2, err3, err4} {
		if err != nil {
			return Header{}, err
		}
	}
	h.Source, h.Destination = netip.AddrPortFrom(src, sport), netip.AddrPortFrom(dst, dport)
	return h, nil
}

// parseV1Addr parses a dotted-quad (TCP4) or IPv6 (TCP6) address without a
// zone; leading zeros in IPv4 are refused by netip.
func parseV1Addr(s string, t Transport) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		return netip.Addr{}, invalid("v1 address %q: not an IP address", s)
	case a.Zone() != "":
		return netip.Addr{}, invalid("v1 address %q has a zone", s)
	case t == TCP4 && !a.Is4():
		return netip.Addr{}, invalid("v1 TCP4 address %q is not IPv4", s)
	case t == TCP6 && !a.Is6():
		return netip.Addr{}, invalid("v1 TCP6 address %q is not IPv6", s)
	}
	return a, nil
}

// parseV1Port parses a decimal port 0-65535 without a sign or leading zeros.
func parseV1Port(s string) (uint16, error) {
	if s == "" || len(s) > 5 || (len(s) > 1 && s[0] == '0') || strings.Trim(s, "0123456789") != "" {
		return 0, invalid("v1 port %q", s)
	}
	p, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0, invalid("v1 port %q", s)
	}
	return uint16(p), nil
}
