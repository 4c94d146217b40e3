package smtpclient

import (
	"bufio"
	"errors"
	"io"
	"net/textproto"
	"strconv"
	"strings"
)

// Bounds on a reply read from a remote server (issue 12 point 1). RFC 5321
// §4.5.3.1.5 allows 512 octets a reply line; twice the longest line we
// send leaves room for servers that are generous with text. Over any of
// them the reply is not read further: the connection is closed and the
// attempt ends with 451 4.5.0 (replyBadReply).
const (
	maxReplyLines = 100
	maxReplyLine  = 2000 // octets, without CRLF
	maxReplyBytes = 64 << 10
)

// errReplyTooLarge: a reply exceeded the bounds above.
var errReplyTooLarge = errors.New("smtpclient: remote reply exceeds its limits (lines, line length or size)")

// replyReader reads RFC 5321 §4.2 replies within the bounds above. It
// buffers at most a few KiB whatever the server sends.
type replyReader struct {
	r *bufio.Reader
}

func newReplyReader(r io.Reader) *replyReader {
	return &replyReader{r: bufio.NewReaderSize(r, 4096)}
}

// read reads one (possibly multiline) reply: its code and its text, the
// lines joined by "\n" as textproto does. A malformed reply is a
// *textproto.ProtocolError; a reply over the bounds is errReplyTooLarge.
func (rr *replyReader) read() (int, string, error) {
	var text strings.Builder
	code := 0
	for n := 0; ; n++ {
		if n == maxReplyLines {
			return 0, "", errReplyTooLarge
		}
		line, err := rr.line()
		if err != nil {
			return 0, "", err
		}
		c, more, msg, err := parseReplyLine(line, code)
		if err != nil {
			return 0, "", err
		}
		code = c
		if n > 0 {
			text.WriteByte('\n')
		}
		text.WriteString(msg)
		if text.Len() > maxReplyBytes {
			return 0, "", errReplyTooLarge
		}
		if !more {
			return code, text.String(), nil
		}
	}
}

// line reads one line without its line ending.
func (rr *replyReader) line() (string, error) {
	b, err := rr.r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) || len(b) > maxReplyLine+2 {
		return "", errReplyTooLarge
	}
	if err != nil {
		if errors.Is(err, io.EOF) && len(b) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return "", err
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// parseReplyLine splits "250-text" / "250 text" / "250"; want is the code
// of the lines before (0 for the first).
func parseReplyLine(line string, want int) (code int, more bool, msg string, err error) {
	if len(line) < 3 || (len(line) > 3 && line[3] != ' ' && line[3] != '-') {
		return 0, false, "", textproto.ProtocolError("malformed reply line: " + line)
	}
	code, err = strconv.Atoi(line[:3])
	if err != nil || code < 100 || code > 599 {
		return 0, false, "", textproto.ProtocolError("malformed reply code: " + line)
	}
	if want != 0 && code != want {
		return 0, false, "", textproto.ProtocolError("reply code changed within a reply: " + line)
	}
	if len(line) > 3 {
		more, msg = line[3] == '-', line[4:]
	}
	return code, more, msg, nil
}
