package sink

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// Buffer sizes and limits of one connection.
const (
	readBufSize  = 64 << 10
	writeBufSize = 4 << 10
	// maxCommandLine bounds a command line (RFC 5321 §4.5.3.1.4 says 512;
	// extensions such as DSN make longer ones common).
	maxCommandLine = 4096
	// deadlineEvery: the read deadline is pushed forward every this many
	// body lines rather than on each (a 100 KiB body has ~1,300 lines).
	deadlineEvery = 256
)

// reply is one SMTP reply (RFC 5321 §4.2, RFC 3463 enhanced codes).
type reply struct {
	code int
	enh  string
	text string
}

// Replies of the sink.
var (
	replyOK          = reply{250, "2.0.0", "OK"}
	replyMailOK      = reply{250, "2.1.0", "Sender OK"}
	replyRcptOK      = reply{250, "2.1.5", "Recipient OK"}
	replyQueued      = reply{250, "2.0.0", "OK: queued (sink)"}
	replyStartData   = reply{354, "", "End data with <CR><LF>.<CR><LF>"}
	replyStartTLS    = reply{220, "2.0.0", "Ready to start TLS"}
	replyBye         = reply{221, "2.0.0", "Bye"}
	replyAuthOK      = reply{235, "2.7.0", "Authentication succeeded"}
	replyVrfy        = reply{252, "2.5.0", "Cannot VRFY user"}
	replyTempFail    = reply{451, "4.7.1", "Try again later (sink tempfail)"}
	replyIOError     = reply{451, "4.3.0", "Local error while saving the message"}
	replyTooManyRcpt = reply{452, "4.5.3", "Too many recipients"}
	replyTimeout     = reply{421, "4.4.2", "Idle timeout, closing connection"}
	replyBadCommand  = reply{500, "5.5.2", "Command not recognized"}
	replyLineTooLong = reply{500, "5.5.6", "Command line too long"}
	replyBadSyntax   = reply{501, "5.5.4", "Syntax error in parameters"}
	replyAuthAborted = reply{501, "5.7.0", "Authentication aborted"}
	replyNoTLS       = reply{502, "5.5.1", "STARTTLS not available"}
	replyBadSequence = reply{503, "5.5.1", "Bad sequence of commands"}
	replyBadMech     = reply{504, "5.5.4", "Unsupported authentication mechanism"}
	replyAuthNeeded  = reply{530, "5.7.0", "Authentication required"}
	replyAuthFailed  = reply{535, "5.7.8", "Authentication credentials invalid"}
	replyPermFail    = reply{550, "5.1.1", "No such user (sink permfail)"}
	replyTooBig      = reply{552, "5.3.4", "Message too big"}
)

// conn is one client connection; it serves commands until QUIT, an error
// or the sink closing. Replies are buffered and flushed when no further
// pipelined command is waiting (RFC 2920 §3.2).
type conn struct {
	s    *Sink
	nc   net.Conn
	r    *bufio.Reader
	w    *bufio.Writer
	tls  bool
	helo bool
	auth bool // authenticated
	mail bool // MAIL accepted, transaction open
	rcpt int64
}

func newConn(s *Sink, nc net.Conn) *conn {
	return &conn{s: s, nc: nc, r: bufio.NewReaderSize(nc, readBufSize), w: bufio.NewWriterSize(nc, writeBufSize)}
}

func (c *conn) serve() {
	defer c.nc.Close()
	c.reply(reply{220, "", c.s.opts.Domain + " ESMTP jetrelay sink"})
	for {
		line, err := c.readLine()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				c.reply(replyTimeout)
				_ = c.w.Flush()
			}
			return
		}
		if line == nil {
			c.reply(replyLineTooLong)
			continue
		}
		if !c.command(line) {
			_ = c.w.Flush()
			return
		}
	}
}

// readLine reads one CRLF- (or LF-) terminated command line without the
// terminator; nil, nil for a line that was too long (and has been skipped).
func (c *conn) readLine() ([]byte, error) {
	if c.r.Buffered() == 0 {
		if err := c.w.Flush(); err != nil {
			return nil, err
		}
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(c.s.opts.Timeout))
	line, err := c.r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) || len(line) > maxCommandLine {
		for errors.Is(err, bufio.ErrBufferFull) {
			_, err = c.r.ReadSlice('\n')
		}
		if err != nil {
			return nil, err
		}
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return bytes.TrimRight(line, "\r\n"), nil
}

func (c *conn) reply(r reply) {
	_ = c.nc.SetWriteDeadline(time.Now().Add(c.s.opts.Timeout))
	c.w.WriteString(strconv.Itoa(r.code))
	c.w.WriteByte(' ')
	if r.enh != "" {
		c.w.WriteString(r.enh)
		c.w.WriteByte(' ')
	}
	c.w.WriteString(r.text)
	c.w.WriteString("\r\n")
}

// command runs one command; false means close the connection.
func (c *conn) command(line []byte) bool {
	verb, arg, _ := bytes.Cut(line, []byte{' '})
	switch string(bytes.ToUpper(verb)) {
	case "EHLO":
		c.ehlo()
	case "HELO":
		c.helo, c.mail, c.rcpt = true, false, 0
		c.reply(reply{250, "", c.s.opts.Domain})
	case "STARTTLS":
		return c.startTLS()
	case "AUTH":
		return c.authenticate(arg)
	case "MAIL":
		c.mailFrom(arg)
	case "RCPT":
		c.rcptTo()
	case "DATA":
		return c.data()
	case "RSET":
		c.mail, c.rcpt = false, 0
		c.reply(replyOK)
	case "NOOP":
		c.reply(replyOK)
	case "VRFY":
		c.reply(replyVrfy)
	case "QUIT":
		c.reply(replyBye)
		return false
	default:
		c.reply(replyBadCommand)
	}
	return true
}

// ehlo answers with the extensions (RFC 5321 §4.1.1.1).
func (c *conn) ehlo() {
	c.helo, c.mail, c.rcpt = true, false, 0
	ext := []string{c.s.opts.Domain, "PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES",
		"SIZE " + strconv.FormatInt(c.s.opts.MaxMessageBytes, 10), "DSN"}
	if c.s.opts.TLS != nil && !c.tls {
		ext = append(ext, "STARTTLS")
	}
	if c.authOffered() {
		ext = append(ext, "AUTH PLAIN")
	}
	for i, e := range ext {
		sep := "-"
		if i == len(ext)-1 {
			sep = " "
		}
		c.w.WriteString("250" + sep + e + "\r\n")
	}
}

// authOffered: AUTH only over TLS, unless no TLS is configured at all.
func (c *conn) authOffered() bool {
	return c.s.opts.Auth != nil && (c.tls || c.s.opts.TLS == nil)
}

// startTLS upgrades the connection and forgets the session (RFC 3207 §4.2).
func (c *conn) startTLS() bool {
	if c.s.opts.TLS == nil || c.tls {
		c.reply(replyNoTLS)
		return true
	}
	c.reply(replyStartTLS)
	if err := c.w.Flush(); err != nil {
		return false
	}
	tc := tls.Server(c.nc, c.s.opts.TLS)
	_ = tc.SetDeadline(time.Now().Add(c.s.opts.Timeout))
	if err := tc.Handshake(); err != nil {
		return false
	}
	c.nc, c.tls = tc, true
	c.r.Reset(tc)
	c.w.Reset(tc)
	c.helo, c.auth, c.mail, c.rcpt = false, false, false, 0
	return true
}

// authenticate runs AUTH PLAIN (RFC 4954, RFC 4616).
func (c *conn) authenticate(arg []byte) bool {
	mech, initial, _ := bytes.Cut(arg, []byte{' '})
	switch {
	case !c.helo || c.auth || c.mail:
		c.reply(replyBadSequence)
		return true
	case !c.authOffered() || !bytes.EqualFold(mech, []byte("PLAIN")):
		c.reply(replyBadMech)
		return true
	}
	resp := initial
	if len(resp) == 0 {
		c.reply(reply{334, "", ""})
		line, err := c.readLine()
		if err != nil {
			return false
		}
		resp = line
	}
	if bytes.Equal(resp, []byte("*")) {
		c.reply(replyAuthAborted)
		return true
	}
	dec, err := base64.StdEncoding.DecodeString(string(resp))
	parts := bytes.Split(dec, []byte{0})
	if err != nil || len(parts) != 3 {
		c.reply(replyBadSyntax)
		return true
	}
	authz, user, pass := string(parts[0]), string(parts[1]), string(parts[2])
	if (authz != "" && authz != user) || !c.s.opts.Auth(user, pass) {
		c.reply(replyAuthFailed)
		return true
	}
	c.auth = true
	c.reply(replyAuthOK)
	return true
}

func (c *conn) mailFrom(arg []byte) {
	switch {
	case !c.helo || c.mail:
		c.reply(replyBadSequence)
		return
	case c.s.opts.Auth != nil && !c.auth:
		c.reply(replyAuthNeeded)
		return
	case len(arg) < 5 || !bytes.EqualFold(arg[:5], []byte("FROM:")):
		c.reply(replyBadSyntax)
		return
	}
	// RFC 1870 §6: refuse a declared SIZE above the limit at once.
	for _, p := range bytes.Fields(arg[5:]) {
		if len(p) > 5 && bytes.EqualFold(p[:5], []byte("SIZE=")) {
			if n, err := strconv.ParseInt(string(p[5:]), 10, 64); err == nil && n > c.s.opts.MaxMessageBytes {
				c.reply(replyTooBig)
				return
			}
		}
	}
	c.mail, c.rcpt = true, 0
	c.reply(replyMailOK)
}

func (c *conn) rcptTo() {
	switch {
	case !c.mail:
		c.reply(replyBadSequence)
		return
	case c.rcpt >= int64(c.s.opts.MaxRecipients):
		c.reply(replyTooManyRcpt)
		return
	}
	if c.s.opts.FailAt == FailAtRcpt {
		if r, failed := c.inject(); failed {
			c.reply(r)
			return
		}
	}
	c.rcpt++
	c.reply(replyRcptOK)
}

// inject returns the failure the plan chooses for this command, if any.
func (c *conn) inject() (reply, bool) {
	switch v := c.s.plan.next(); v {
	case verdictTemp:
		c.s.failed(v)
		return replyTempFail, true
	case verdictPerm:
		c.s.failed(v)
		return replyPermFail, true
	}
	return reply{}, false
}

// data reads the message (RFC 5321 §4.1.1.4, dot-stuffing §4.5.2) and
// counts it; false if the connection broke.
func (c *conn) data() bool {
	if !c.mail || c.rcpt == 0 {
		c.reply(replyBadSequence)
		return true
	}
	c.reply(replyStartData)
	if err := c.w.Flush(); err != nil {
		return false
	}
	var out io.Writer
	var f *os.File
	if c.s.opts.DumpDir != "" {
		var err error
		f, err = os.OpenFile(filepath.Join(c.s.opts.DumpDir, fmt.Sprintf("%08d.eml", c.s.seq.Add(1))),
			os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			c.s.opts.ErrorLog.Printf("sink: dump: %v", err)
		} else {
			out = f
		}
	}
	n, werr, err := c.readBody(out)
	if f != nil {
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
	}
	rcpts := c.rcpt
	c.mail, c.rcpt = false, 0
	switch {
	case err != nil:
		return false
	case werr != nil:
		c.s.opts.ErrorLog.Printf("sink: dump: %v", werr)
		c.reply(replyIOError)
	case n > c.s.opts.MaxMessageBytes:
		c.reply(replyTooBig)
	default:
		if c.s.opts.FailAt == FailAtData {
			if r, failed := c.inject(); failed {
				c.reply(r)
				return true
			}
		}
		c.s.delivered(n, rcpts)
		c.reply(replyQueued)
	}
	return true
}

// readBody consumes the body up to the line ".", removing dot-stuffing, and
// returns its size; out (if not nil) gets the body. werr is a write error
// (the body is still consumed), err a read error.
func (c *conn) readBody(out io.Writer) (n int64, werr, err error) {
	lineStart := true
	for i := 0; ; i++ {
		if i%deadlineEvery == 0 {
			_ = c.nc.SetReadDeadline(time.Now().Add(c.s.opts.Timeout))
		}
		chunk, err := c.r.ReadSlice('\n')
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return n, werr, err
		}
		if lineStart && len(chunk) > 0 && chunk[0] == '.' {
			if len(chunk) == 3 && chunk[1] == '\r' && chunk[2] == '\n' {
				return n, werr, nil
			}
			chunk = chunk[1:]
		}
		lineStart = err == nil // a full buffer ends mid-line
		n += int64(len(chunk))
		if out != nil && werr == nil {
			_, werr = out.Write(chunk)
		}
	}
}
