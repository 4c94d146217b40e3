package smtpclient

import (
	"bufio"
	"bytes"
	"net"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// Pipelined transactions (RFC 2920). go-smtp's client is lock-step: MAIL,
// each RCPT, DATA and the end of data each wait for their reply, and the
// body goes through textproto's byte-at-a-time dot writer. To a server
// that offers PIPELINING a transaction is sent instead as one write of
// [RSET] MAIL RCPT… DATA, then (after 354) one write of the dot-stuffed body
// and the final dot: two round trips whatever the recipient count. The
// replies are read in order and settle each recipient exactly as the
// lock-step path does (same parameters, same classification).
//
// Transactions whose parameters go-smtp would encode in ways not
// reproduced here (UTF-8 ORCPT, non-ASCII ENVID) take the lock-step path.

// pipe reads the replies of pipelined commands on a session's connection.
// The connection is the one go-smtp's client uses; both only read replies
// to commands they sent, so neither leaves buffered bytes for the other.
type pipe struct {
	conn net.Conn
	r    *replyReader
	// extensions as go-smtp's client sees them (it checks presence only)
	size, eightBit bool
}

// stuffPool recycles the buffers that hold a dot-stuffed body.
var stuffPool = sync.Pool{New: func() any { return new([]byte) }}

// maxPooledStuff: larger buffers are left to the GC rather than pinned.
const maxPooledStuff = 1 << 20

// canPipeline reports whether m can go as a pipelined transaction.
func (s *Session) canPipeline(m *Message) bool {
	if !s.ext.pipelining || s.wire == nil || !validLine(m.From) {
		return false
	}
	if s.ext.dsn && !printableASCII(m.EnvID) {
		return false
	}
	for _, r := range m.Rcpts {
		if !validLine(r.Addr) {
			return false
		}
		if o := s.rcptOptions(r); o != nil && o.OriginalRecipient != "" &&
			(o.OriginalRecipientType != smtp.DSNAddressTypeRFC822 || !printableASCII(o.OriginalRecipient)) {
			return false
		}
	}
	if s.pipe == nil {
		has := func(k string) bool { ok, _ := s.c.Extension(k); return ok }
		s.pipe = &pipe{conn: s.wire, r: newReplyReader(s.wire),
			size: has("SIZE"), eightBit: has("8BITMIME")}
	}
	return true
}

// pipelined runs m as one pipelined transaction (see canPipeline).
func (s *Session) pipelined(m *Message, body []byte, to Timeouts) ([]Reply, error) {
	p := s.pipe
	var cmds bytes.Buffer
	rset := s.dirty
	if rset {
		cmds.WriteString("RSET\r\n")
	}
	s.dirty = true
	s.writeMail(&cmds, m, len(body))
	for _, r := range m.Rcpts {
		s.writeRcpt(&cmds, r)
	}
	cmds.WriteString("DATA\r\n")
	if err := p.send(cmds.Bytes(), to.Mail); err != nil {
		return nil, err
	}
	if rset {
		if _, err := p.reply(to.Mail, 2); err != nil {
			return nil, err
		}
	}
	if _, err := p.reply(to.Mail, 2); err != nil {
		if v := Classify(err); v.NextHost {
			return nil, err
		} else {
			// RFC 2920 §3.1: the RCPTs and DATA are refused too; read them.
			if err := p.drain(len(m.Rcpts), to); err != nil {
				return nil, err
			}
			s.dirty = false // a refused MAIL opens no transaction (RFC 5321 §3.3)
			return fill(len(m.Rcpts), v.Reply), nil
		}
	}
	replies := make([]Reply, len(m.Rcpts))
	accepted := 0
	var closing error
	for i := range m.Rcpts {
		_, err := p.reply(to.Rcpt, 2)
		if err == nil {
			replies[i] = replyRcptOK
			accepted++
			continue
		}
		v := Classify(err)
		if v.NextHost && closing == nil {
			closing = err
		}
		replies[i] = v.Reply
	}
	dataErr := p.replyCode(to.DataInit, 354)
	if closing != nil {
		return nil, closing
	}
	if dataErr != nil {
		if v := Classify(dataErr); v.NextHost {
			return nil, dataErr
		} else if accepted > 0 {
			fillAccepted(replies, v.Reply)
		}
		return replies, nil
	}
	if accepted == 0 {
		// DATA was accepted without recipients: end it empty (RFC 2920 §3.1).
		if err := p.send([]byte(".\r\n"), to.DataFinal); err != nil {
			return nil, err
		}
		if _, err := p.reply(to.DataFinal, 0); err != nil {
			return nil, err
		}
		s.dirty = false
		return replies, nil
	}
	final, err := s.sendBody(body, to)
	if err != nil {
		return nil, err
	}
	if final.OK() {
		s.sent++
	}
	fillAccepted(replies, final)
	return replies, nil
}

// sendBody writes the dot-stuffed body and the final dot in one write and
// returns the final reply; an error means the connection failed.
func (s *Session) sendBody(body []byte, to Timeouts) (Reply, error) {
	p := s.pipe
	bp := stuffPool.Get().(*[]byte)
	buf := appendDotStuffed((*bp)[:0], body)
	// No explicit deadline: deadlineConn puts the data block timeout on
	// the write (RFC 5321 §4.5.3.2.5).
	_ = p.conn.SetDeadline(time.Time{})
	_, err := p.conn.Write(buf)
	if cap(buf) <= maxPooledStuff {
		*bp = buf[:0]
		stuffPool.Put(bp)
	}
	if err != nil {
		return Reply{}, err
	}
	msg, err := p.reply(to.DataFinal, 2)
	if err != nil {
		s.dirty = false
		return s.finalFailed(err), nil
	}
	s.dirty = false
	return okReply(msg), nil
}

func fillAccepted(replies []Reply, r Reply) {
	for i := range replies {
		if replies[i].OK() {
			replies[i] = r
		}
	}
}

// writeMail formats MAIL FROM with the parameters go-smtp's Client.Mail
// would send for the same options.
func (s *Session) writeMail(b *bytes.Buffer, m *Message, size int) {
	o := s.mailOptions(m, size)
	b.WriteString("MAIL FROM:<")
	b.WriteString(m.From)
	b.WriteString(">")
	if s.pipe.eightBit {
		b.WriteString(" BODY=8BITMIME")
	}
	if s.pipe.size && o.Size != 0 {
		b.WriteString(" SIZE=" + strconv.FormatInt(o.Size, 10))
	}
	if o.RequireTLS && s.ext.requireTLS {
		b.WriteString(" REQUIRETLS")
	}
	if o.UTF8 && s.ext.utf8 {
		b.WriteString(" SMTPUTF8")
	}
	if s.ext.dsn {
		if o.Return != "" {
			b.WriteString(" RET=" + string(o.Return))
		}
		if o.EnvelopeID != "" {
			b.WriteString(" ENVID=" + xtext(o.EnvelopeID))
		}
	}
	b.WriteString("\r\n")
}

// writeRcpt formats RCPT TO like go-smtp's Client.Rcpt.
func (s *Session) writeRcpt(b *bytes.Buffer, r Recipient) {
	b.WriteString("RCPT TO:<")
	b.WriteString(r.Addr)
	b.WriteString(">")
	if o := s.rcptOptions(r); o != nil {
		if len(o.Notify) > 0 {
			b.WriteString(" NOTIFY=")
			for i, n := range o.Notify {
				if i > 0 {
					b.WriteByte(',')
				}
				b.WriteString(string(n))
			}
		}
		if o.OriginalRecipient != "" {
			b.WriteString(" ORCPT=" + string(o.OriginalRecipientType) + ";" + xtext(o.OriginalRecipient))
		}
	}
	b.WriteString("\r\n")
}

// send writes b with a write deadline of d.
func (p *pipe) send(b []byte, d time.Duration) error {
	_ = p.conn.SetDeadline(time.Now().Add(d))
	_, err := p.conn.Write(b)
	return err
}

// reply reads one reply within d. A reply whose first digit is not class
// (0 = any) is returned as an *smtp.SMTPError, as go-smtp's client does.
func (p *pipe) reply(d time.Duration, class int) (string, error) {
	_ = p.conn.SetDeadline(time.Now().Add(d))
	code, msg, err := p.r.read()
	_ = p.conn.SetDeadline(time.Time{})
	if err != nil {
		return "", err
	}
	if class != 0 && code/100 != class {
		return "", toSMTPError(code, msg)
	}
	return msg, nil
}

// replyCode reads one reply and wants exactly code.
func (p *pipe) replyCode(d time.Duration, code int) error {
	_ = p.conn.SetDeadline(time.Now().Add(d))
	c, msg, err := p.r.read()
	_ = p.conn.SetDeadline(time.Time{})
	if err != nil {
		return err
	}
	if c != code {
		return toSMTPError(c, msg)
	}
	return nil
}

// drain reads the replies to n RCPTs and DATA after a refused MAIL. A 354
// (a server accepting DATA anyway) is answered with an empty message.
func (p *pipe) drain(n int, to Timeouts) error {
	for range n {
		if _, err := p.reply(to.Rcpt, 0); err != nil {
			return err
		}
	}
	if err := p.replyCode(to.DataInit, 354); err == nil {
		if err := p.send([]byte(".\r\n"), to.DataFinal); err != nil {
			return err
		}
		_, err = p.reply(to.DataFinal, 0)
		return err
	} else if _, ok := err.(*smtp.SMTPError); !ok {
		return err
	}
	return nil
}

// toSMTPError builds the error go-smtp's client returns for a reply
// (enhanced code split off the text, RFC 2034).
func toSMTPError(code int, msg string) *smtp.SMTPError {
	e := &smtp.SMTPError{Code: code, Message: msg}
	first, rest, ok := strings.Cut(msg, " ")
	if !ok || !enhRE.MatchString(first) {
		return e
	}
	var ec smtp.EnhancedCode
	for i, part := range strings.SplitN(first, ".", 3) {
		ec[i], _ = strconv.Atoi(part)
	}
	e.EnhancedCode = ec
	e.Message = strings.ReplaceAll(rest, "\n"+first+" ", "\n")
	return e
}

// appendDotStuffed appends body as DATA content (RFC 5321 §4.5.2) with
// the end-of-data line, exactly as textproto's DotWriter (go-smtp's
// lock-step path) writes it: a leading dot doubled, lines ending in CRLF.
// Bodies whose line ends are all CRLF (submission normalises them) take a
// line-at-a-time path; anything else goes through DotWriter itself.
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
	dst = slices.Grow(dst, len(body)+len(body)/64+5)
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

// xtext encodes an ASCII DSN parameter (RFC 3461 §4).
func xtext(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= '!' && c <= '~' && c != '+' && c != '=' {
			b.WriteByte(c)
			continue
		}
		b.WriteString("+" + strings.ToUpper(strconv.FormatInt(int64(c), 16)))
	}
	return b.String()
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// validLine is go-smtp's check on command arguments.
func validLine(s string) bool { return !strings.ContainsAny(s, "\r\n") }
