package submit

import (
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/jetrelay/jetrelay/relay/events"
)

// listener admits connections within max_connections and
// max_connections_per_ip and refuses banned clients, before go-smtp sees
// them (RFC 5321 §3.1: a server may answer 421 instead of 220).
// An implicit-TLS listener hands go-smtp a *tls.Conn (RFC 8314 §3.3).
type listener struct {
	net.Listener
	srv      *Server
	implicit bool
}

// Accept returns the next admitted connection; refused ones are answered
// in the background and never reach go-smtp.
func (l *listener) Accept() (net.Conn, error) {
	for {
		raw, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if c := l.srv.admit(raw, l.implicit); c != nil {
			return c, nil
		}
	}
}

// admit checks the limits for a new connection and wraps it, or refuses it.
func (s *Server) admit(raw net.Conn, implicit bool) net.Conn {
	ip := remoteIP(raw)
	key := clientKey(ip)
	sub := s.policy().sub
	line, reason := "", ""
	if !s.policy().trusted(ip) && s.clientBanned(key) {
		line, reason = lineBanned, "client banned after repeated authentication failures"
	} else if r := s.conns.add(key, sub.MaxConnections, sub.MaxConnectionsPerIP); r != "" {
		line, reason = r, map[string]string{lineTooManyConns: "max_connections reached",
			lineTooManyFromIP: "max_connections_per_ip reached", lineShutdown: "shutting down"}[r]
	}
	if line != "" {
		s.refuse(raw, implicit, line, reason)
		return nil
	}
	now := time.Now()
	c := &trackedConn{
		Conn: raw, srv: s, id: "c" + randomHex(6), ip: ip, key: key, started: now,
		sessionEnd: now.Add(min(sub.Timeouts.Session.D(), sub.Timeouts.PreAuth.Session.D())),
	}
	s.conns.track(c)
	if implicit {
		return tls.Server(c, s.tlsConf)
	}
	return c
}

// refuse answers a refused connection with a 421 line and closes it. The
// answer is written in the background with a short deadline (after a TLS
// handshake on implicit-TLS listeners); when too many refusals are pending,
// the connection is just closed.
func (s *Server) refuse(raw net.Conn, implicit bool, line, reason string) {
	s.emit(&events.Event{Event: events.Rejected, RemoteAddr: raw.RemoteAddr().String(), IP: remoteIP(raw),
		SMTPCode: 421, SMTPEnh: "4.7.0", Reason: reason})
	select {
	case s.refusing <- struct{}{}:
	default:
		_ = raw.Close()
		return
	}
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		defer func() { <-s.refusing }()
		_ = raw.SetDeadline(time.Now().Add(sayTimeout))
		var w net.Conn = raw
		if implicit {
			w = tls.Server(raw, s.tlsConf)
		}
		_, _ = fmt.Fprintf(w, line, s.hostname)
		_ = w.Close()
	}()
}

func remoteIP(c net.Conn) string {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.IP.String()
	}
	host, _, err := net.SplitHostPort(c.RemoteAddr().String())
	if err != nil {
		return c.RemoteAddr().String()
	}
	return host
}

// connTracker counts open connections, in all and per client, and knows
// them for shutdown. Its maps hold only open connections, so they are
// bounded by max_connections.
type connTracker struct {
	mu       sync.Mutex
	total    int
	perKey   map[string]int
	conns    map[*trackedConn]struct{}
	draining bool
}

func newConnTracker() *connTracker {
	return &connTracker{perKey: map[string]int{}, conns: map[*trackedConn]struct{}{}}
}

// add takes a slot for key, or returns the line refusing it.
func (t *connTracker) add(key string, maxTotal, maxPerKey int) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case t.draining:
		return lineShutdown
	case maxTotal > 0 && t.total >= maxTotal:
		return lineTooManyConns
	case maxPerKey > 0 && t.perKey[key] >= maxPerKey:
		return lineTooManyFromIP
	}
	t.total++
	t.perKey[key]++
	return ""
}

func (t *connTracker) track(c *trackedConn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.conns[c] = struct{}{}
	c.srv.connGauge.Inc()
	if t.draining {
		c.drain()
	}
}

func (t *connTracker) remove(c *trackedConn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.conns, c)
	c.srv.connGauge.Dec()
	t.total--
	if t.perKey[c.key]--; t.perKey[c.key] <= 0 {
		delete(t.perKey, c.key)
	}
}

// drainAll refuses new connections and asks every open one to end.
func (t *connTracker) drainAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.draining = true
	for c := range t.conns {
		c.drain()
	}
}

// open returns the number of open connections.
func (t *connTracker) open() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.total
}

// snapshot returns the open connections.
func (t *connTracker) snapshot() map[*trackedConn]struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[*trackedConn]struct{}, len(t.conns))
	for c := range t.conns {
		out[c] = struct{}{}
	}
	return out
}
