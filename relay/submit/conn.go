package submit

import (
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// sayTimeout bounds writing a line this package sends on its own.
const sayTimeout = 5 * time.Second

// trackedConn wraps an accepted connection with the limits go-smtp leaves
// to its user: commands outside a transaction (max_idle_commands),
// timeouts.session and timeouts.pre_auth, the whole-transfer
// timeouts.data, and draining at shutdown. go-smtp asks for them through
// the hooks of jetrelay's fork (Server.CommandHook before each command,
// ReadTimeoutFunc before each line read, ReadTimeoutReply when a read timed
// out); a failed TLS handshake after STARTTLS is closed by go-smtp itself
// and reported to TLSHandshakeFailed (RFC 3207 §4.1).
type trackedConn struct {
	net.Conn
	srv     *Server
	id      string
	ip, key string
	release sync.Once

	mu           sync.Mutex
	started      time.Time
	authed       bool // AUTH succeeded: the pre-auth limits are over
	sessionEnd   time.Time
	dataEnd      time.Time
	inTx, inData bool
	draining     bool
	dead         bool
	idle         int
	refusal      txRefusal // one refusal, one rejection line (followon.go)
}

// commandHook runs before go-smtp handles a command line (Server.CommandHook):
// it ends a draining, expired or idling session with its 421 reply.
func (s *Server) commandHook(c *smtp.Conn, verb string) error {
	tc := findTracked(c.Conn())
	if tc == nil {
		return net.ErrClosed
	}
	tc.refusal.command(verb)
	if !commandVerb(verb) {
		tc.mu.Lock()
		tc.dead = true
		tc.mu.Unlock()
		return errBadVerb
	}
	line, err := tc.beforeCommand()
	if line != "" {
		return lineReply(line, s.hostname)
	}
	return err
}

// commandVerb reports whether verb is alphabetic ASCII (RFC 5321 §4.1.1), or
// "" for a line go-smtp could not parse (it answers that itself). go-smtp
// echoes an unknown verb in its reply, so any other byte there would put
// control characters (even a bare CR) into a reply line.
func commandVerb(verb string) bool {
	for i := 0; i < len(verb); i++ {
		if verb[i] < 'A' || verb[i] > 'Z' {
			return false
		}
	}
	return true
}

func (c *trackedConn) beforeCommand() (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if line := c.endLineLocked(); line != "" || c.dead {
		c.dead = true
		return line, net.ErrClosed
	}
	if !c.inTx && !c.inData {
		c.idle++
		if limit := c.srv.policy().sub.MaxIdleCommands; limit > 0 && c.idle > limit {
			c.dead = true
			return lineIdleCommands, net.ErrClosed
		}
	}
	return "", nil
}

// endLineLocked returns the line that ends the session now, if any.
func (c *trackedConn) endLineLocked() string {
	// One reading of the clock: two could fall either side of sessionEnd
	// and name the wrong limit (the pre-auth one ends an unauthenticated
	// session).
	over := !time.Now().Before(c.sessionEnd)
	switch {
	case c.draining && !c.inData:
		return lineShutdown
	case over && !c.authed:
		return linePreAuthOver
	case over:
		return lineSessionOver
	}
	return ""
}

// idleLimitLocked reports that the idle commands used up max_idle_commands:
// the session ends before reading another command.
func (c *trackedConn) idleLimitLocked() bool {
	limit := c.srv.policy().sub.MaxIdleCommands
	return limit > 0 && !c.inTx && !c.inData && c.idle >= limit
}

// readTimeout is the time allowed for the next line (Server.ReadTimeoutFunc):
// timeouts.idle, before AUTH at most timeouts.pre_auth.idle (RFC 5321
// §4.5.3.2 allows shorter limits), never past the session's end or, during
// a BDAT transfer, the transfer's end. A dead connection is closed here.
func (s *Server) readTimeout(c *smtp.Conn) time.Duration {
	tc := findTracked(c.Conn())
	if tc == nil {
		return time.Nanosecond
	}
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if tc.dead {
		_ = tc.Conn.Close() // its last reply is written: end without another
		return time.Nanosecond
	}
	sub := s.policy().sub
	d := sub.Timeouts.Idle.D()
	if !tc.authed {
		d = min(d, sub.Timeouts.PreAuth.Idle.D())
	}
	if tc.endLineLocked() != "" || tc.idleLimitLocked() {
		return time.Nanosecond // timeoutReply answers with the limit
	}
	end := tc.sessionEnd
	if tc.inData && tc.dataEnd.Before(end) {
		end = tc.dataEnd
	}
	return max(min(d, time.Until(end)), time.Nanosecond)
}

// timeoutReply answers a read that timed out (Server.ReadTimeoutReply):
// the limit that ended it, else go-smtp's idle timeout reply.
func (s *Server) timeoutReply(c *smtp.Conn) *smtp.SMTPError {
	tc := findTracked(c.Conn())
	if tc == nil {
		return nil
	}
	tc.mu.Lock()
	line := tc.endLineLocked()
	if line == "" && tc.idleLimitLocked() {
		line = lineIdleCommands
	}
	tc.dead = true
	tc.mu.Unlock()
	if line == "" {
		return nil
	}
	return lineReply(line, s.hostname)
}

// handshakeFailed logs a failed TLS handshake (Server.TLSHandshakeFailed);
// go-smtp closes the connection without a plaintext reply.
func (s *Server) handshakeFailed(c *smtp.Conn, err error) {
	ev := s.log.Info().Err(err).Str("event", "starttls_failed").Str("remote_addr", c.Conn().RemoteAddr().String())
	if tc := findTracked(c.Conn()); tc != nil {
		ev = ev.Str("conn_id", tc.id)
	}
	ev.Msg("TLS handshake failed; connection closed")
}

// lineReply turns one of this package's 421 lines into the reply go-smtp
// writes, naming this host as RFC 5321 §4.2 asks of 421.
func lineReply(line, host string) *smtp.SMTPError {
	code, _ := strconv.Atoi(line[:3])
	var enh smtp.EnhancedCode
	for i, p := range strings.SplitN(line[4:9], ".", 3) {
		enh[i], _ = strconv.Atoi(p)
	}
	text := strings.Replace(strings.TrimSuffix(line[10:], "\r\n"), "%s", host, 1)
	return &smtp.SMTPError{Code: code, EnhancedCode: enh, Message: text}
}

// Close releases the connection's slot once.
func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.release.Do(func() { c.srv.conns.remove(c) })
	return err
}

// CloseWrite shuts the write side of the accepted connection. go-smtp
// (jetrelay's fork) calls it before closing after a final reply (421, too
// many errors, a line too long) and drains the client's input, so that a
// client with unread input gets that reply instead of a reset.
func (c *trackedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
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

// beginData lets a transfer take up to d in all (timeouts.data), never
// past the session's end. go-smtp reads DATA content under the deadline
// set here; BDAT chunks under readTimeout's, which honours dataEnd.
func (c *trackedConn) beginData(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inData, c.dataEnd = true, time.Now().Add(d)
	end := c.dataEnd
	if c.sessionEnd.Before(end) {
		end = c.sessionEnd
	}
	_ = c.Conn.SetReadDeadline(end)
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
