package smtp

import (
	"bufio"
	"bytes"
	"errors"
	"net/textproto"
	"sync"
	"time"
)

// PipelinedRcpt is one recipient of SendPipelined.
type PipelinedRcpt struct {
	Addr string
	Opts *RcptOptions // nil: no parameters
}

// PipelineResult holds the server's replies to one pipelined transaction.
// A nil *SMTPError means the command was accepted. Use Err to settle a
// recipient.
type PipelineResult struct {
	// Reset is the reply to the RSET sent first because an earlier
	// transaction was left open (nil also when none was sent).
	Reset *SMTPError
	// Mail is the refusal of MAIL. The RCPT and DATA replies that follow
	// a refused MAIL (RFC 2920 section 3.1) are in Rcpts and Data.
	Mail *SMTPError
	// Rcpts has one entry per recipient, in order.
	Rcpts []*SMTPError
	// Data is the refusal of DATA (any reply but 354).
	Data *SMTPError
	// Final is the refusal of the message (the reply to the final dot);
	// FinalText the text of its 2xx reply. The message is only sent when
	// MAIL, DATA and at least one RCPT were accepted; otherwise Final is
	// nil and FinalText empty.
	Final     *SMTPError
	FinalText string
	// Accepted counts the recipients whose RCPT was accepted.
	Accepted int
}

// Err is the reply that settles recipient i: the first refusal among
// MAIL, its RCPT, DATA and the final dot, or nil if the message was
// accepted for it.
func (r *PipelineResult) Err(i int) *SMTPError {
	switch {
	case r.Mail != nil:
		return r.Mail
	case r.Rcpts[i] != nil:
		return r.Rcpts[i]
	case r.Data != nil:
		return r.Data
	}
	return r.Final
}

// stuffPool recycles the buffers that hold a dot-stuffed body.
var stuffPool = sync.Pool{New: func() interface{} { return new([]byte) }}

// maxPooledStuff: larger buffers are left to the GC rather than pinned.
const maxPooledStuff = 1 << 20

// maxBodyWrite bounds one write of a message body: each write gets its
// own Timeouts.DataBlock deadline.
const maxBodyWrite = 1 << 20

// SendPipelined sends one mail transaction with PIPELINING (RFC 2920):
// [RSET], MAIL, every RCPT and DATA in one write; after a 354 the
// dot-stuffed body and the final dot in one write (per MiB). body is the
// message with CRLF line ends (bare LF and CR are sent like the DotWriter
// of Data sends them). MAIL and RCPT parameters are encoded exactly as
// Mail and Rcpt encode them; each reply is awaited for its phase of
// c.Timeouts and read within the reply limits.
//
// A refused MAIL, RCPT, DATA or message is a reply in the result, not an
// error. RSET is sent first when a previous transaction is still open.
// If MAIL is refused or no RCPT accepted yet the server answers DATA with
// 354, an empty message is sent to end it (RFC 2920 section 3.1).
//
// The error is non-nil when the connection failed or is unusable: a
// network error or timeout, a reply over the limits (*ReplyTooLongError),
// a malformed reply, or a 421 reply (returned as the *SMTPError, RFC 5321
// section 3.8). The result is then nil, the connection is closed and later
// calls return the same error. An
// error after the final dot was written is a *DataSentError: the server
// may have the message. Arguments the encoders refuse return an error
// before anything is sent.
func (c *Client) SendPipelined(from string, opts *MailOptions, rcpts []PipelinedRcpt, body []byte) (*PipelineResult, error) {
	if c.lmtp {
		return nil, errors.New("smtp: SendPipelined used with an LMTP client")
	}
	if len(rcpts) == 0 {
		return nil, errors.New("smtp: SendPipelined without recipients")
	}
	if err := validateLine(from); err != nil {
		return nil, err
	}
	if err := c.hello(); err != nil {
		return nil, err
	}
	if _, ok := c.ext["PIPELINING"]; !ok {
		return nil, errors.New("smtp: server does not support PIPELINING")
	}
	if c.replyErr != nil {
		return nil, c.replyErr
	}
	cmds, err := c.pipelineCommands(from, opts, rcpts)
	if err != nil {
		return nil, err
	}
	p := &pipeline{c: c, res: &PipelineResult{Rcpts: make([]*SMTPError, len(rcpts))}}
	reset := c.inTx
	err = p.write(cmds, c.timeout(c.Timeouts.Mail))
	if err == nil {
		err = p.envelope(reset, rcpts)
	}
	if err == nil && p.res.Mail == nil && p.res.Data == nil && p.res.Accepted > 0 {
		err = p.message(body)
	}
	if err != nil {
		// Replies may be missing or unread: the connection is out of step.
		c.rcpts = nil
		if c.replyErr == nil {
			c.replyErr = err
		}
		c.text.Close()
		return nil, err
	}
	return p.res, nil
}

// pipelineCommands encodes [RSET] MAIL RCPT… DATA.
func (c *Client) pipelineCommands(from string, opts *MailOptions, rcpts []PipelinedRcpt) ([]byte, error) {
	// One allocation for the usual commands (parameters beyond SIZE grow it).
	n := len("RSET\r\nMAIL FROM:<> BODY=8BITMIME SIZE=1234567890\r\nDATA\r\n") + len(from)
	for _, r := range rcpts {
		n += len("RCPT TO:<>\r\n") + len(r.Addr)
	}
	var b bytes.Buffer
	b.Grow(n)
	if c.inTx {
		b.WriteString("RSET\r\n")
	}
	line, err := c.mailCommand(from, opts)
	if err != nil {
		return nil, err
	}
	b.WriteString(line)
	b.WriteString("\r\n")
	for _, r := range rcpts {
		if err := validateLine(r.Addr); err != nil {
			return nil, err
		}
		line, err := c.rcptCommand(r.Addr, r.Opts)
		if err != nil {
			return nil, err
		}
		b.WriteString(line)
		b.WriteString("\r\n")
	}
	b.WriteString("DATA\r\n")
	return b.Bytes(), nil
}

type pipeline struct {
	c   *Client
	res *PipelineResult
}

// write sends b with a write deadline of d.
func (p *pipeline) write(b []byte, d time.Duration) error {
	c := p.c
	c.conn.SetDeadline(time.Now().Add(d))
	defer c.conn.SetDeadline(time.Time{})
	if _, err := c.text.W.Write(b); err != nil {
		return err
	}
	return c.text.W.Flush()
}

// reply reads one reply within d. A reply whose code does not match
// expect is returned as refusal; a 421 as the error, after which the
// connection is closed.
func (p *pipeline) reply(d time.Duration, expect int) (string, *SMTPError, error) {
	c := p.c
	c.conn.SetDeadline(time.Now().Add(d))
	defer c.conn.SetDeadline(time.Time{})
	code, msg, err := c.readReply()
	if err != nil {
		return "", nil, err
	}
	if codeMatches(code, expect) {
		return msg, nil, nil
	}
	se := toSMTPErr(&textproto.Error{Code: code, Msg: msg})
	if code == 421 {
		c.text.Close()
		c.replyErr = se
		return "", nil, se
	}
	return "", se, nil
}

// envelope reads the replies to [RSET] MAIL RCPT… DATA.
func (p *pipeline) envelope(reset bool, rcpts []PipelinedRcpt) error {
	c, res := p.c, p.res
	var err error
	if reset {
		if _, res.Reset, err = p.reply(c.timeout(c.Timeouts.Mail), 250); err != nil {
			return err
		}
		if res.Reset == nil {
			c.inTx = false
		}
	}
	if _, res.Mail, err = p.reply(c.timeout(c.Timeouts.Mail), 250); err != nil {
		return err
	}
	if res.Mail == nil {
		c.inTx = true
	}
	c.rcpts = c.rcpts[:0]
	for i, r := range rcpts {
		if _, res.Rcpts[i], err = p.reply(c.timeout(c.Timeouts.Rcpt), 25); err != nil {
			return err
		}
		if res.Rcpts[i] == nil && res.Mail == nil {
			res.Accepted++
			c.rcpts = append(c.rcpts, r.Addr)
		}
	}
	if _, res.Data, err = p.reply(c.timeout(c.Timeouts.DataInit), 354); err != nil {
		return err
	}
	if res.Data == nil && (res.Mail != nil || res.Accepted == 0) {
		// DATA accepted without a transaction or recipients: end it with
		// an empty message (RFC 2920 section 3.1); its reply settles nothing.
		if err := p.write([]byte(".\r\n"), c.finalTimeout()); err != nil {
			return err
		}
		_, _, err := p.reply(c.finalTimeout(), 250)
		if err == nil {
			c.inTx = false
		}
		return err
	}
	return nil
}

// message writes the body and the final dot and reads the final reply.
func (p *pipeline) message(body []byte) error {
	c := p.c
	bp := stuffPool.Get().(*[]byte)
	buf := appendDotStuffed((*bp)[:0], body)
	err := p.writeBody(buf)
	if cap(buf) <= maxPooledStuff {
		*bp = buf[:0]
		stuffPool.Put(bp)
	}
	if err != nil {
		return err
	}
	msg, se, err := p.reply(c.finalTimeout(), 250)
	if err != nil {
		if _, ok := err.(*SMTPError); ok { // 421: the reply was read
			c.inTx = false
			return err
		}
		return &DataSentError{Err: err}
	}
	c.inTx = false
	p.res.Final, p.res.FinalText = se, msg
	return nil
}

// writeBody writes the stuffed body in writes of at most maxBodyWrite,
// each under Timeouts.DataBlock (none if zero).
func (p *pipeline) writeBody(b []byte) error {
	c := p.c
	defer c.conn.SetDeadline(time.Time{})
	for len(b) > 0 {
		n := len(b)
		if n > maxBodyWrite {
			n = maxBodyWrite
		}
		if c.Timeouts.DataBlock > 0 {
			c.conn.SetDeadline(time.Now().Add(c.Timeouts.DataBlock))
		} else {
			c.conn.SetDeadline(time.Time{})
		}
		if _, err := c.text.W.Write(b[:n]); err != nil {
			return err
		}
		if err := c.text.W.Flush(); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// appendDotStuffed appends body as DATA content (RFC 5321 section 4.5.2)
// with the end-of-data line, exactly as the DotWriter of Data writes it:
// a leading dot doubled, lines ending in CRLF. Bodies whose line ends are
// all CRLF take a line-at-a-time path; anything else goes through the
// DotWriter itself.
func appendDotStuffed(dst, body []byte) []byte {
	crlf := bytes.Count(body, []byte("\r\n"))
	if len(body) == 0 || bytes.Count(body, []byte("\r")) != crlf || bytes.Count(body, []byte("\n")) != crlf {
		b := bytes.NewBuffer(dst)
		bw := bufio.NewWriter(b)
		w := textproto.NewWriter(bw).DotWriter()
		_, _ = w.Write(body)
		_ = w.Close()
		_ = bw.Flush()
		return b.Bytes()
	}
	dst = growBytes(dst, len(body)+len(body)/64+5)
	for len(body) > 0 {
		if body[0] == '.' {
			dst = append(dst, '.')
		}
		i := bytes.IndexByte(body, '\n')
		if i < 0 { // last line without its CRLF
			dst = append(dst, body...)
			dst = append(dst, '\r', '\n')
			break
		}
		dst = append(dst, body[:i+1]...)
		body = body[i+1:]
	}
	return append(dst, '.', '\r', '\n')
}

func growBytes(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b
	}
	nb := make([]byte, len(b), len(b)+n)
	copy(nb, b)
	return nb
}
