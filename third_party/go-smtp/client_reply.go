package smtp

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/textproto"
	"strings"
)

// Default limits on a reply the client reads. RFC 5321 section 4.5.3.1.5
// allows 512 octets per reply line; servers exceed that, so the line limit
// is generous (like the server's command line limit), while a reply as a
// whole stays small.
const (
	DefaultMaxReplyLines      = 100
	DefaultMaxReplyLineLength = 2000
	DefaultMaxReplyBytes      = 64 << 10
)

// The limits a ReplyTooLongError names.
const (
	ReplyLimitLines      = "lines"
	ReplyLimitLineLength = "line length"
	ReplyLimitBytes      = "bytes"
)

// ReplyTooLongError is returned when a server's reply breaks one of the
// client's reply limits (Client.MaxReplyLines, MaxReplyLineLength,
// MaxReplyBytes). The limit is enforced while the reply is read, so an
// endless line costs at most one buffer. The connection is closed: the rest
// of the reply is unread, so no later reply could be matched to its command.
// Every later call returns the same error.
type ReplyTooLongError struct {
	Limit string // ReplyLimitLines, ReplyLimitLineLength or ReplyLimitBytes
	Max   int    // the limit that was exceeded
}

func (e *ReplyTooLongError) Error() string {
	return fmt.Sprintf("smtp: server reply over the %s limit (%d)", e.Limit, e.Max)
}

// Is makes a too long line match ErrTooLongLine, the error the client
// returned for it before reply limits existed.
func (e *ReplyTooLongError) Is(target error) bool {
	return target == ErrTooLongLine && e.Limit == ReplyLimitLineLength
}

type replyLimits struct{ lines, lineLen, bytes int }

func (c *Client) replyLimits() replyLimits {
	l := replyLimits{c.MaxReplyLines, c.MaxReplyLineLength, c.MaxReplyBytes}
	if l.lines <= 0 {
		l.lines = DefaultMaxReplyLines
	}
	if l.lineLen <= 0 {
		l.lineLen = DefaultMaxReplyLineLength
	}
	if l.bytes <= 0 {
		l.bytes = DefaultMaxReplyBytes
	}
	return l
}

// readReply reads one reply (RFC 5321 section 4.2) within the reply
// limits. Continuation lines are joined with "\n" as textproto's
// ReadResponse joins them, including its tolerance of continuation lines
// with a different code. Breaking a limit closes the connection.
func (c *Client) readReply() (int, string, error) {
	if c.replyErr != nil {
		return 0, "", c.replyErr
	}
	code, msg, err := readReply(c.text.R, c.replyLimits())
	var tooLong *ReplyTooLongError
	if errors.As(err, &tooLong) {
		c.replyErr = err
		c.text.Close()
	}
	return code, msg, err
}

func readReply(r *bufio.Reader, lim replyLimits) (int, string, error) {
	var (
		sb        strings.Builder
		code      int
		total     int
		continued = true
		line      []byte
	)
	for n := 0; continued; n++ {
		if n == lim.lines {
			return 0, "", &ReplyTooLongError{Limit: ReplyLimitLines, Max: lim.lines}
		}
		var raw int
		var err error
		line, raw, err = readReplyLine(r, lim.lineLen, line[:0])
		if err != nil {
			return 0, "", err
		}
		if total += raw; total > lim.bytes {
			return 0, "", &ReplyTooLongError{Limit: ReplyLimitBytes, Max: lim.bytes}
		}
		if n == 0 {
			var text string
			code, continued, text, err = parseReplyLine(line)
			if err != nil {
				return 0, "", err
			}
			sb.WriteString(text)
			continue
		}
		code2, cont2, text, err := parseReplyLine(line)
		sb.WriteByte('\n')
		if err != nil || code2 != code {
			// As textproto's ReadResponse: the whole line, trailing CR and LF cut.
			sb.Write(bytes.TrimRight(line, "\r\n"))
			continue
		}
		sb.WriteString(text)
		continued = cont2
	}
	return code, sb.String(), nil
}

// readReplyLine appends one line to buf without its line end; raw is the
// octet count read. A line longer than max is refused before more than
// one buffer of it is held.
func readReplyLine(r *bufio.Reader, max int, buf []byte) (line []byte, raw int, err error) {
	for {
		chunk, err := r.ReadSlice('\n')
		raw += len(chunk)
		if raw > max+2 {
			return nil, raw, &ReplyTooLongError{Limit: ReplyLimitLineLength, Max: max}
		}
		buf = append(buf, chunk...)
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			if err == io.EOF && raw > 0 {
				err = io.ErrUnexpectedEOF
			}
			return nil, raw, err
		}
		break
	}
	buf = buf[:len(buf)-1]
	if len(buf) > 0 && buf[len(buf)-1] == '\r' {
		buf = buf[:len(buf)-1]
	}
	if len(buf) > max {
		return nil, raw, &ReplyTooLongError{Limit: ReplyLimitLineLength, Max: max}
	}
	return buf, raw, nil
}

// parseReplyLine splits "250-text", "250 text" or "250".
func parseReplyLine(line []byte) (code int, continued bool, text string, err error) {
	if len(line) < 3 || len(line) > 3 && line[3] != ' ' && line[3] != '-' {
		return 0, false, "", textproto.ProtocolError("short response: " + string(line))
	}
	for _, d := range line[:3] {
		if d < '0' || d > '9' {
			return 0, false, "", textproto.ProtocolError("invalid response code: " + string(line))
		}
		code = code*10 + int(d-'0')
	}
	if code < 100 {
		return 0, false, "", textproto.ProtocolError("invalid response code: " + string(line))
	}
	if len(line) == 3 {
		return code, false, "", nil
	}
	return code, line[3] == '-', string(line[4:]), nil
}

// codeMatches is textproto's test of a reply code against an expected
// code of one, two or three digits (0: any code).
func codeMatches(code, expect int) bool {
	switch {
	case 1 <= expect && expect < 10:
		return code/100 == expect
	case 10 <= expect && expect < 100:
		return code/10 == expect
	case 100 <= expect && expect < 1000:
		return code == expect
	}
	return true
}
