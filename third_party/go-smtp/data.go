package smtp

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
)

type EnhancedCode [3]int

// SMTPError specifies the error code, enhanced error code (if any) and
// message returned by the server.
type SMTPError struct {
	Code         int
	EnhancedCode EnhancedCode
	Message      string
}

// NoEnhancedCode is used to indicate that enhanced error code should not be
// included in response.
//
// Note that RFC 2034 requires an enhanced code to be included in all 2xx, 4xx
// and 5xx responses. This constant is exported for use by extensions, you
// should probably use EnhancedCodeNotSet instead.
var NoEnhancedCode = EnhancedCode{-1, -1, -1}

// EnhancedCodeNotSet is a nil value of EnhancedCode field in SMTPError, used
// to indicate that backend failed to provide enhanced status code. X.0.0 will
// be used (X is derived from error code).
var EnhancedCodeNotSet = EnhancedCode{0, 0, 0}

func (err *SMTPError) Error() string {
	s := fmt.Sprintf("SMTP error %03d", err.Code)
	if err.Message != "" {
		s += ": " + err.Message
	}
	return s
}

func (err *SMTPError) Temporary() bool {
	return err.Code/100 == 4
}

var ErrDataTooLarge = &SMTPError{
	Code:         552,
	EnhancedCode: EnhancedCode{5, 3, 4},
	Message:      "Maximum message size exceeded",
}

type dataReader struct {
	r     *bufio.Reader
	state int

	limited bool
	n       int64 // Maximum bytes remaining
}

func newDataReader(c *Conn) *dataReader {
	dr := &dataReader{
		r: c.text.R,
	}

	if c.server.MaxMessageBytes > 0 {
		dr.limited = true
		dr.n = int64(c.server.MaxMessageBytes)
	}

	return dr
}

// States of the DATA reader (RFC 5321 §4.5.2 dot-stuffing and the
// <CR><LF>.<CR><LF> end marker).
const (
	stateBeginLine = iota // beginning of line; initial state; must be zero
	stateDot              // read . at beginning of line
	stateDotCR            // read .\r at beginning of line
	stateCR               // read \r (possibly at end of line)
	stateData             // reading data in middle of line
	stateEOF              // reached .\r\n end marker line
)

// Read returns the message content with dot-stuffing undone and the end
// marker removed. Line endings are passed through as they are.
//
// jetrelay patch: in the middle of a line everything up to the next CR is
// copied from the buffer in one go instead of one ReadByte per byte, and the
// size limit counts content bytes only, so a message of exactly
// MaxMessageBytes is accepted (upstream refused it before reading the end
// marker). The state machine is upstream's (from net/textproto, without its
// CRLF -> LF rewriting).
func (r *dataReader) Read(b []byte) (n int, err error) {
	for n < len(b) && r.state != stateEOF {
		if r.state == stateData {
			if buf := r.buffered(); len(buf) > 0 {
				if i := bytes.IndexByte(buf, '\r'); i >= 0 {
					buf = buf[:i]
				}
				if len(buf) > 0 {
					m := len(b) - n
					if len(buf) < m {
						m = len(buf)
					}
					if r.limited {
						if left := r.n - int64(n); int64(m) > left {
							m = int(left)
						}
						if m == 0 {
							err = ErrDataTooLarge
							break
						}
					}
					copy(b[n:], buf[:m])
					r.r.Discard(m)
					n += m
					continue
				}
			}
		}

		var c byte
		c, err = r.r.ReadByte()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			break
		}
		if !r.step(c) {
			continue
		}
		if r.limited && int64(n) >= r.n {
			// The state is up to date, so draining the rest still finds
			// the end marker.
			err = ErrDataTooLarge
			break
		}
		b[n] = c
		n++
	}
	if err == nil && r.state == stateEOF {
		err = io.EOF
	}

	if r.limited {
		r.n -= int64(n)
	}
	return
}

// step advances the state machine by one byte and reports whether the byte
// is message content.
func (r *dataReader) step(c byte) bool {
	switch r.state {
	case stateBeginLine:
		if c == '.' {
			r.state = stateDot
			return false
		}
		if c == '\r' {
			r.state = stateCR
			break
		}
		r.state = stateData
	case stateDot:
		if c == '\r' {
			r.state = stateDotCR
			return false
		}
		r.state = stateData
	case stateDotCR:
		if c == '\n' {
			r.state = stateEOF
			return false
		}
		r.state = stateData
	case stateCR:
		if c == '\n' {
			r.state = stateBeginLine
			break
		}
		r.state = stateData
	case stateData:
		if c == '\r' {
			r.state = stateCR
		}
	}
	return true
}

// buffered returns the bytes already read from the connection, without
// reading more.
func (r *dataReader) buffered() []byte {
	k := r.r.Buffered()
	if k == 0 {
		return nil
	}
	buf, _ := r.r.Peek(k)
	return buf
}
