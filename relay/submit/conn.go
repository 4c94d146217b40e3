package submit

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/jetrelay/jetrelay/relay/events"
)

// sayTimeout bounds writing a line this package sends on its own.
const sayTimeout = 5 * time.Second

// trackedConn wraps an accepted connection to add what go-smtp v0.25.1
// lacks. go-smtp sets the read deadline once before every command line it
// reads (through a *tls.Conn, which passes deadlines down to this conn), so
// SetReadDeadline is where this conn counts commands outside a transaction
// (max_idle_commands), enforces timeouts.session and shutdown, and stretches
// the deadline over a whole DATA/BDAT transfer (timeouts.data). Returning
// net.ErrClosed there makes go-smtp close the connection quietly, after
// this conn wrote its own 421 line.
type trackedConn struct {
	net.Conn
	srv      *Server
	id       string
	ip, key  string
	watchTLS bool // a STARTTLS listener: a failed handshake closes the connection
	release  sync.Once

	mu            sync.Mutex
	top           net.Conn // the conn go-smtp talks through (a *tls.Conn once TLS is up)
	tlsUp         bool
	started       time.Time
	authed        bool // AUTH succeeded: the pre-auth limits are over
	sessionEnd    time.Time
	dataEnd       time.Time
	inTx, inData  bool
	draining      bool
	dead          bool
	idle          int
	replies220    int  // "220 " lines written in plaintext: greeting, then STARTTLS
	afterStartTLS bool // STARTTLS was answered with 220: only TLS records may follow
}

// SetReadDeadline is called by go-smtp before each command line.
func (c *trackedConn) SetReadDeadline(t time.Time) error {
	line, err := c.beforeCommand(t)
	if line != "" {
		c.srv.emit(&events.Event{Event: events.Rejected, ConnID: c.id, RemoteAddr: c.RemoteAddr().String(),
			SMTPCode: 421, SMTPEnh: lineEnh(line), Reason: lineReasons[line]})
		c.say(line)
	}
	return err
}

var lineReasons = map[string]string{
	lineIdleCommands: "max_idle_commands reached",
	lineSessionOver:  "timeouts.session reached",
	linePreAuthOver:  "timeouts.pre_auth.session reached",
	lineShutdown:     "shutting down",
}

// lineEnh extracts the enhanced code of one of our own 421 lines.
func lineEnh(line string) string {
	if len(line) > 9 {
		return line[4:9]
	}
	return ""
}

func (c *trackedConn) beforeCommand(t time.Time) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.dead:
		return "", net.ErrClosed
	case c.draining && !c.inData:
		c.dead = true
		return lineShutdown, net.ErrClosed
	case !time.Now().Before(c.sessionEnd) && !c.authed:
		c.dead = true
		return linePreAuthOver, net.ErrClosed
	case !time.Now().Before(c.sessionEnd):
		c.dead = true
		return lineSessionOver, net.ErrClosed
	}
	if !c.authed { // RFC 5321 §4.5.3.2 allows shorter limits; before AUTH they are
		if end := time.Now().Add(c.srv.policy().sub.Timeouts.PreAuth.Idle.D()); t.IsZero() || t.After(end) {
			t = end
		}
	}
	if !c.inTx && !c.inData {
		c.idle++
		if limit := c.srv.policy().sub.MaxIdleCommands; limit > 0 && c.idle > limit {
			c.dead = true
			return lineIdleCommands, net.ErrClosed
		}
	}
	return "", c.Conn.SetReadDeadline(c.clampLocked(t))
}

// clampLocked limits a deadline to the session's end and, during a
// transfer, to the transfer's end.
func (c *trackedConn) clampLocked(t time.Time) time.Time {
	end := c.sessionEnd
	if c.inData && c.dataEnd.Before(end) {
		end = c.dataEnd
	}
	if t.IsZero() || t.After(end) {
		return end
	}
	return t
}

// SetDeadline keeps the session limit on reads.
func (c *trackedConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	rt := c.clampLocked(t)
	c.mu.Unlock()
	if err := c.Conn.SetReadDeadline(rt); err != nil {
		return err
	}
	return c.Conn.SetWriteDeadline(t)
}

// Write watches a STARTTLS listener's plaintext: after the "220" that
// answers STARTTLS, only TLS records may go out. go-smtp answers a failed
// handshake with a plaintext "550" and carries on in plaintext; that reply
// is dropped here and the connection closed instead (RFC 3207 §4.1).
func (c *trackedConn) Write(b []byte) (int, error) {
	if c.watchTLS && len(b) > 0 && !c.checkWrite(b) {
		c.srv.log.Info().Str("event", "starttls_failed").Str("conn_id", c.id).Str("remote_addr", c.RemoteAddr().String()).
			Msg("TLS handshake failed after STARTTLS; connection closed")
		_ = c.Conn.Close()
		return 0, net.ErrClosed
	}
	return c.Conn.Write(b)
}

func (c *trackedConn) checkWrite(b []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.afterStartTLS {
		if bytes.HasPrefix(b, []byte("220 ")) {
			if c.replies220++; c.replies220 == 2 {
				c.afterStartTLS = true
			}
		}
		return true
	}
	// TLS records start with a content type 0x14..0x18; a reply starts with a digit.
	if b[0] >= '0' && b[0] <= '9' {
		c.dead = true
		return false
	}
	return true
}

// Close releases the connection's slot once.
func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.release.Do(func() { c.srv.conns.remove(c) })
	return err
}

// say writes one of this package's own lines through the TLS layer when
// there is one; during a STARTTLS handshake it writes nothing.
func (c *trackedConn) say(format string) {
	c.mu.Lock()
	top, ok := c.top, !c.afterStartTLS || c.tlsUp
	c.mu.Unlock()
	if !ok || top == nil {
		return
	}
	_ = top.SetWriteDeadline(time.Now().Add(sayTimeout))
	_, _ = fmt.Fprintf(top, format, c.srv.hostname)
}

// setTop records the conn go-smtp uses (called when a session starts).
func (c *trackedConn) setTop(top net.Conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.top = top
	_, c.tlsUp = top.(*tls.Conn)
}

// beginTx marks a transaction: commands inside it are not idle.
func (c *trackedConn) beginTx() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inTx, c.idle = true, 0
}

// endTx ends a transaction (RSET, end of DATA, new EHLO).
func (c *trackedConn) endTx() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inTx = false
}

// authenticated ends the pre-auth phase (after a successful AUTH): the
// idle-command count restarts and timeouts.session applies from the
// connection's start instead of timeouts.pre_auth.session.
func (c *trackedConn) authenticated() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.idle, c.authed = 0, true
	c.sessionEnd = c.started.Add(c.srv.policy().sub.Timeouts.Session.D())
}

// beginData lets a transfer take up to d in all (timeouts.data).
func (c *trackedConn) beginData(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inData, c.dataEnd = true, time.Now().Add(d)
	_ = c.Conn.SetReadDeadline(c.clampLocked(c.dataEnd))
}

// endData ends a transfer; after a timed-out transfer the connection closes.
func (c *trackedConn) endData(timedOut bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inData, c.dataEnd = false, time.Time{}
	if timedOut {
		c.dead = true
	}
}

// drain makes the connection end at its next command (shutdown). A client
// waiting between commands is woken now; a transfer runs to its end.
func (c *trackedConn) drain() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.draining = true
	if !c.inData {
		_ = c.Conn.SetReadDeadline(time.Now())
	}
}

// isInData reports whether a transfer is under way (tests, metrics).
func (c *trackedConn) isInData() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inData
}
