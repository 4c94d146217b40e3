// Package proxyproto reads the PROXY protocol header a TCP load balancer
// (haproxy, AWS NLB, …) sends before the client's bytes, so that a server
// behind it sees the client's address instead of the balancer's.
//
// It owns two things: Parse, a pure parser for one header in either
// version of the haproxy specification ("The PROXY protocol", versions 1
// and 2), bounded before it looks at anything (a v1 line is at most 107
// bytes, a v2 header at most 16 + MaxV2Payload bytes), and Listener, a
// net.Listener that accepts connections only from allowed peers and only
// with a valid header within a time limit, handing on a Conn whose
// RemoteAddr is the client's. Nothing is ever written to a connection by
// this package: a refused connection is closed silently, because the
// protocol has no way to answer and the real client cannot be told.
//
// Supported: v1 TCP4, TCP6 and UNKNOWN; v2 PROXY over TCP/IPv4 and
// TCP/IPv6, v2 PROXY with AF_UNSPEC, and v2 LOCAL (health checks of the
// balancer itself). UNKNOWN, AF_UNSPEC and LOCAL carry no usable client
// address: the connection's own addresses stand (spec §2.1 and §2.2).
// v2 TLVs are skipped (within the bound). UDP and UNIX-socket addresses
// are refused: this package serves TCP listeners.
package proxyproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

const (
	// MaxV1Line is the longest v1 header, CRLF included (spec §2.1).
	MaxV1Line = 107
	// v2HeaderLen is the fixed part of a v2 header (spec §2.2).
	v2HeaderLen = 16
	// MaxV2Payload bounds the v2 address block plus TLVs. The spec allows
	// up to 65535 bytes; balancers send at most a few hundred (addresses,
	// ALPN, authority, TLS and cloud endpoint TLVs).
	MaxV2Payload = 2048
	// MaxHeader is the most bytes a header can take.
	MaxHeader = v2HeaderLen + MaxV2Payload
)

var (
	v1Prefix = []byte("PROXY ")
	// v2Sig is the 12-byte v2 signature (spec §2.2).
	v2Sig = []byte("\r\n\r\n\x00\r\nQUIT\n")
)

// ErrIncomplete: the bytes so far are a valid beginning of a header; read more.
var ErrIncomplete = errors.New("proxyproto: incomplete header")

// ErrInvalid is wrapped by every error for bytes that are not a valid header.
var ErrInvalid = errors.New("invalid PROXY protocol header")

// Command is what the balancer says about the connection.
type Command uint8

const (
	// Proxy: the connection is relayed on behalf of the client in Source.
	Proxy Command = iota
	// Local: the balancer itself connected (v2 only, e.g. a health check);
	// the connection's own addresses apply.
	Local
)

// Transport is the relayed connection's address family.
type Transport uint8

const (
	// Unknown: no addresses (v1 UNKNOWN, v2 AF_UNSPEC or LOCAL).
	Unknown Transport = iota
	// TCP4 is TCP over IPv4.
	TCP4
	// TCP6 is TCP over IPv6.
	TCP6
)

func (t Transport) String() string {
	switch t {
	case TCP4:
		return "TCP4"
	case TCP6:
		return "TCP6"
	}
	return "UNKNOWN"
}

// Header is one parsed PROXY protocol header.
type Header struct {
	Version   int // 1 or 2
	Command   Command
	Transport Transport
	// Source and Destination are the client's and the original
	// destination's address; valid only when Transport is TCP4 or TCP6.
	Source, Destination netip.AddrPort
}

// Client returns the client's address, or false when the header names
// none and the connection's own peer address applies.
func (h Header) Client() (netip.AddrPort, bool) {
	if h.Command != Proxy || h.Transport == Unknown {
		return netip.AddrPort{}, false
	}
	return h.Source, true
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// Parse parses the header at the start of b and returns it with the number
// of bytes it took. It returns ErrIncomplete while b is a proper beginning
// of a header (never once b holds MaxHeader bytes), and an error wrapping
// ErrInvalid as soon as b cannot begin one. Bytes after the header are not
// looked at.
func Parse(b []byte) (Header, int, error) {
	switch {
	case hasPrefix(b, v1Prefix):
		return parseV1(b)
	case hasPrefix(b, v2Sig):
		return parseV2(b)
	}
	return Header{}, 0, invalid("does not start with %q or the v2 signature", "PROXY")
}

// hasPrefix reports whether b and sig agree on their common length.
func hasPrefix(b, sig []byte) bool {
	n := min(len(b), len(sig))
	return bytes.Equal(b[:n], sig[:n])
}

// parseV2 parses a binary header (spec §2.2).
func parseV2(b []byte) (Header, int, error) {
	if len(b) < v2HeaderLen {
		return Header{}, 0, ErrIncomplete
	}
	if ver := b[12] >> 4; ver != 2 {
		return Header{}, 0, invalid("v2 version nibble %d, want 2", ver)
	}
	n := int(binary.BigEndian.Uint16(b[14:16]))
	if n > MaxV2Payload {
		return Header{}, 0, invalid("v2 payload of %d bytes exceeds %d", n, MaxV2Payload)
	}
	h := Header{Version: 2}
	switch cmd := b[12] & 0x0f; cmd {
	case 0x0:
		h.Command = Local
	case 0x1:
		h.Command = Proxy
	default:
		return Header{}, 0, invalid("v2 command %#x", cmd)
	}
	if len(b) < v2HeaderLen+n {
		return Header{}, 0, ErrIncomplete
	}
	if h.Command == Local { // family and addresses are ignored (spec §2.2)
		return h, v2HeaderLen + n, nil
	}
	payload := b[v2HeaderLen : v2HeaderLen+n]
	var alen int
	switch fam := b[13]; fam {
	case 0x00: // AF_UNSPEC: the connection's own addresses apply
		return h, v2HeaderLen + n, nil
	case 0x11:
		h.Transport, alen = TCP4, 12
	case 0x21:
		h.Transport, alen = TCP6, 36
	default:
		return Header{}, 0, invalid("v2 family/protocol %#02x (only TCP over IPv4 or IPv6 is served)", fam)
	}
	if n < alen {
		return Header{}, 0, invalid("v2 %s address block of %d bytes, want at least %d", h.Transport, n, alen)
	}
	al := alen/2 - 2 // address length: 4 or 16
	src, _ := netip.AddrFromSlice(payload[:al])
	dst, _ := netip.AddrFromSlice(payload[al : 2*al])
	h.Source = netip.AddrPortFrom(src, binary.BigEndian.Uint16(payload[2*al:]))
	h.Destination = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(payload[2*al+2:]))
	return h, v2HeaderLen + n, nil // TLVs after the addresses are skipped
}
