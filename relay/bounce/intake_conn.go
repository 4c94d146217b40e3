package bounce

import (
	"errors"
	"net"
	"sync"
	"time"
)

// Connection limits of the intake (bounces.intake). The listener refuses
// a connection over max_connections_per_ip (per IPv4 address, per IPv6
// /64) or max_connections with "421 4.7.0" (RFC 5321 §3.8, RFC 3463
// 4.7.0 "other security or policy status") before go-smtp greets it, and
// logs it. An accepted connection is wrapped so that every read deadline
// go-smtp sets is cut to the earlier of
//
//   - the last transaction step (connect, MAIL, RCPT, end of DATA) +
//     bounces.intake.idle: commands that do not reach the Session (NOOP,
//     RSET, HELP, VRFY, EHLO) do not move it, so a NOOP loop is cut off;
//   - connect + bounces.intake.session, an absolute cap, which also bounds
//     MAIL/RSET loops and a slow DATA.
//
// go-smtp then answers the timeout with "421 4.4.2 Idle timeout" and
// closes. (A server command hook in the fork would let the session count
// commands instead of relying on go-smtp setting a deadline before each
// read; the deadline wrapper needs no fork change.)

// refuseWriteTimeout bounds writing a refusal to a fresh connection.
const refuseWriteTimeout = 2 * time.Second

// intakeLimits are the effective bounces.intake values.
type intakeLimits struct {
	max, perIP    int
	idle, session time.Duration
}

func (b *Bouncer) intakeLimits() intakeLimits {
	in := b.state().set.Intake
	l := intakeLimits{max: in.MaxConnections, perIP: in.MaxConnectionsPerIP, idle: in.Idle.D(), session: in.Session.D()}
	if l.max < 1 {
		l.max = 100
	}
	if l.perIP < 1 {
		l.perIP = 10
	}
	if l.idle <= 0 {
		l.idle = time.Minute
	}
	if l.session < l.idle {
		l.session = 10 * l.idle
	}
	return l
}

// intakeListener counts connections in total and per client address.
type intakeListener struct {
	net.Listener
	b     *Bouncer // its settings give the limits, read per connection (reloadable)
	mu    sync.Mutex
	total int
	perIP map[string]int
}

func (b *Bouncer) newIntakeListener(ln net.Listener) *intakeListener {
	return &intakeListener{Listener: ln, b: b, perIP: map[string]int{}}
}

// Accept returns the next connection within the limits; connections over
// a limit are answered 421 4.7.0, closed and logged here.
func (l *intakeListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		key, lim := clientKey(c.RemoteAddr()), l.b.intakeLimits()
		reply := l.admit(key, lim)
		if reply == "" {
			return newIntakeConn(c, lim, func() { l.release(key) }), nil
		}
		l.refuse(c, reply)
	}
}

// admit counts a connection from key, or returns the refusal.
func (l *intakeListener) admit(key string, lim intakeLimits) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.perIP[key] >= lim.perIP:
		return replyTooManyFromIP
	case l.total >= lim.max:
		return replyTooMany
	}
	l.total++
	l.perIP[key]++
	return ""
}

func (l *intakeListener) release(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.perIP[key]--; l.perIP[key] <= 0 {
		delete(l.perIP, key)
	}
}

func (l *intakeListener) refuse(c net.Conn, reply string) {
	_ = c.SetWriteDeadline(time.Now().Add(refuseWriteTimeout))
	_, err := c.Write([]byte(reply + "\r\n"))
	_ = c.Close()
	ev := l.b.log.Warn().Str("event", "bounce_refused").Str("remote_addr", c.RemoteAddr().String()).
		Int("smtp_code", 421).Str("smtp_enh", "4.7.0")
	if err != nil {
		ev = ev.AnErr("write_error", err)
	}
	ev.Msg("intake refused a connection: " + reply[len("421 4.7.0 "):])
}

// clientKey is the address a per-IP limit counts: the IPv4 address, or
// the IPv6 /64 (one host usually holds a whole /64).
func clientKey(a net.Addr) string {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return a.String()
	}
	if ip4 := ta.IP.To4(); ip4 != nil {
		return ip4.String()
	}
	return ta.IP.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

// intakeConn cuts go-smtp's read deadlines to the idle and session limits.
type intakeConn struct {
	net.Conn
	lim     intakeLimits
	start   time.Time
	once    sync.Once
	release func()
	mu      sync.Mutex
	last    time.Time // last transaction step
	inData  bool
}

// CloseWrite shuts the write side of the accepted connection, so that
// go-smtp (jetrelay's fork, patch 0008) can deliver its last reply to a
// client with unread input instead of a reset.
func (c *intakeConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

func newIntakeConn(c net.Conn, lim intakeLimits, release func()) *intakeConn {
	now := time.Now()
	return &intakeConn{Conn: c, lim: lim, start: now, last: now, release: release}
}

// limit is the latest moment a read may end.
func (c *intakeConn) limit() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	end := c.start.Add(c.lim.session)
	if idle := c.last.Add(c.lim.idle); !c.inData && idle.Before(end) {
		return idle
	}
	return end
}

// progress records a transaction step and applies the new limit.
func (c *intakeConn) progress() {
	c.mu.Lock()
	c.last, c.inData = time.Now(), false
	c.mu.Unlock()
	_ = c.Conn.SetReadDeadline(c.limit())
}

// dataPhase lets the message body take until the session cap.
func (c *intakeConn) dataPhase() {
	c.mu.Lock()
	c.last, c.inData = time.Now(), true
	c.mu.Unlock()
	_ = c.Conn.SetReadDeadline(c.limit())
}

func (c *intakeConn) cut(t time.Time) time.Time {
	if l := c.limit(); t.IsZero() || l.Before(t) {
		return l
	}
	return t
}

// SetReadDeadline implements net.Conn with the limits applied.
func (c *intakeConn) SetReadDeadline(t time.Time) error { return c.Conn.SetReadDeadline(c.cut(t)) }

// SetDeadline implements net.Conn with the limits applied to reads.
func (c *intakeConn) SetDeadline(t time.Time) error {
	if err := c.Conn.SetWriteDeadline(t); err != nil {
		return err
	}
	return c.SetReadDeadline(t)
}

// Close releases the connection's place in the counts once.
func (c *intakeConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}
