package relaytest

import (
	"bufio"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// RawMX is a hand-written SMTP server on 127.0.0.x for hostile-peer tests:
// it greets, answers EHLO with Extensions and then lets its hooks answer
// MAIL and the end of data however a hostile server would (streaming
// megabytes, never answering, closing). Unlike FakeMX it reads commands
// itself, so a hook may write anything at all.
type RawMX struct {
	IP   string
	Port int
	Addr string

	// Extensions are the EHLO keywords offered (e.g. "PIPELINING").
	Extensions []string
	// NoGreeting: accept TCP and never say anything (connections are
	// held until the test ends).
	NoGreeting bool
	// Mail answers MAIL FROM (nil: "250 2.1.0 ok"); it returns false to
	// close the connection.
	Mail func(w io.Writer) bool
	// Final answers the end of data (nil: "250 2.0.0 queued"); false closes.
	Final func(w io.Writer) bool

	conns    atomic.Int64
	hanging  atomic.Int64
	messages atomic.Int64
	mu       sync.Mutex
	open     []net.Conn
}

// FakeRawMX starts m on a free 127.0.0.x address with port (0: any). Set
// m's fields before calling it; they are read by the connections.
func FakeRawMX(t testing.TB, m *RawMX, port int) *RawMX {
	t.Helper()
	ln := listenLoopback(t, port)
	m.Addr = ln.Addr().String()
	host, p, _ := net.SplitHostPort(m.Addr)
	m.IP = host
	m.Port, _ = strconv.Atoi(p)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			m.conns.Add(1)
			m.mu.Lock()
			m.open = append(m.open, c)
			m.mu.Unlock()
			go m.serve(c)
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		m.mu.Lock()
		defer m.mu.Unlock()
		for _, c := range m.open {
			_ = c.Close()
		}
	})
	return m
}

// Connections is the number of TCP connections accepted.
func (m *RawMX) Connections() int { return int(m.conns.Load()) }

// Hanging is the number of never-greeted connections still open.
func (m *RawMX) Hanging() int { return int(m.hanging.Load()) }

// Messages is the number of message bodies received up to their final dot.
func (m *RawMX) Messages() int { return int(m.messages.Load()) }

func (m *RawMX) serve(c net.Conn) {
	if m.NoGreeting {
		m.hanging.Add(1)
		_, _ = io.Copy(io.Discard, c) // until the client or the test closes it
		m.hanging.Add(-1)
		return
	}
	defer c.Close()
	r := bufio.NewReader(io.LimitReader(c, 64<<20))
	_, _ = io.WriteString(c, "220 raw.test ESMTP\r\n")
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		if !m.command(c, r, strings.ToUpper(strings.TrimSpace(line))) {
			return
		}
	}
}

// command answers one command; false closes the connection.
func (m *RawMX) command(c net.Conn, r *bufio.Reader, cmd string) bool {
	switch {
	case strings.HasPrefix(cmd, "EHLO"):
		lines := append([]string{"raw.test"}, m.Extensions...)
		for i, l := range lines {
			sep := "-"
			if i == len(lines)-1 {
				sep = " "
			}
			_, _ = io.WriteString(c, "250"+sep+l+"\r\n")
		}
	case strings.HasPrefix(cmd, "MAIL"):
		if m.Mail != nil {
			return m.Mail(c)
		}
		_, _ = io.WriteString(c, "250 2.1.0 ok\r\n")
	case strings.HasPrefix(cmd, "DATA"):
		_, _ = io.WriteString(c, "354 go ahead\r\n")
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return false
			}
			if l == ".\r\n" {
				break
			}
		}
		m.messages.Add(1)
		if m.Final != nil {
			return m.Final(c)
		}
		_, _ = io.WriteString(c, "250 2.0.0 queued\r\n")
	case strings.HasPrefix(cmd, "QUIT"):
		_, _ = io.WriteString(c, "221 bye\r\n")
		return false
	default: // RCPT, RSET, NOOP
		_, _ = io.WriteString(c, "250 ok\r\n")
	}
	return true
}

// StreamLine writes a reply line of n octets with no end, for a Mail or
// Final hook ("a 256 MiB single-line reply"); it stops when the client
// closes the connection.
func StreamLine(code string, n int) func(io.Writer) bool {
	return func(w io.Writer) bool {
		chunk := []byte(strings.Repeat("x", 32<<10))
		_, _ = io.WriteString(w, code+" ")
		for sent := 0; sent < n; sent += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return false
			}
		}
		return false
	}
}

// ManyLines writes a multi-line reply of n octets in lines of 1,000 octets
// (each within the line limit), for a Mail or Final hook.
func ManyLines(code string, n int) func(io.Writer) bool {
	return func(w io.Writer) bool {
		line := strings.Repeat("y", 996)
		bw := bufio.NewWriterSize(w, 64<<10)
		for sent := 0; sent < n; sent += 1002 {
			if _, err := bw.WriteString(code + "-" + line + "\r\n"); err != nil {
				return false
			}
		}
		_, _ = bw.WriteString(code + " end\r\n")
		return bw.Flush() == nil
	}
}
