package proxyproto

import (
	"net"
)

// Conn is a connection whose header was read: RemoteAddr and LocalAddr are
// the addresses the header names (the connection's own where it names
// none), and Read returns the bytes the peer sent after the header first.
type Conn struct {
	net.Conn
	header        Header
	rest          []byte
	remote, local net.Addr
}

func newConn(raw net.Conn, h Header, rest []byte) *Conn {
	c := &Conn{Conn: raw, header: h, remote: raw.RemoteAddr(), local: raw.LocalAddr()}
	if len(rest) > 0 {
		c.rest = append([]byte(nil), rest...)
	}
	if src, ok := h.Client(); ok {
		c.remote = net.TCPAddrFromAddrPort(src)
		c.local = net.TCPAddrFromAddrPort(h.Destination)
	}
	return c
}

// Read returns the bytes buffered after the header, then reads the
// connection. Like any net.Conn read, it must not be called concurrently.
func (c *Conn) Read(p []byte) (int, error) {
	if len(c.rest) > 0 {
		n := copy(p, c.rest)
		c.rest = c.rest[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// RemoteAddr is the client's address from the header, else the peer's.
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

// LocalAddr is the original destination from the header, else the local end.
func (c *Conn) LocalAddr() net.Addr { return c.local }

// Header returns the header read from the connection.
func (c *Conn) Header() Header { return c.header }

// Peer returns the address of the balancer that sent the header.
func (c *Conn) Peer() net.Addr { return c.Conn.RemoteAddr() }

// NetConn returns the underlying connection.
func (c *Conn) NetConn() net.Conn { return c.Conn }
