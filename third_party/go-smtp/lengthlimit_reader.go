package smtp

import (
	"bytes"
	"errors"
	"io"
)

var ErrTooLongLine = errors.New("smtp: too long a line in input stream")

// lineLimitReader reads from the underlying Reader but restricts
// line length of lines in input stream to a certain length.
//
// If line length exceeds the limit - Read returns ErrTooLongLine
type lineLimitReader struct {
	R         io.Reader
	LineLimit int

	curLineLength int
}

func (r *lineLimitReader) Read(b []byte) (int, error) {
	if r.curLineLength > r.LineLimit && r.LineLimit > 0 {
		return 0, ErrTooLongLine
	}

	n, err := r.R.Read(b)
	if err != nil {
		return n, err
	}

	if r.LineLimit == 0 || n == 0 {
		return n, nil
	}

	// Line by line, not byte by byte: the newline search is vectorised,
	// and the count is the same as stepping every byte (each byte
	// counts, a newline starts the count again at 1).
	for buf := b[:n]; ; {
		i := bytes.IndexByte(buf, '\n')
		if i < 0 {
			r.curLineLength += len(buf)
			if r.curLineLength > r.LineLimit {
				return 0, ErrTooLongLine
			}
			break
		}
		if r.curLineLength+i > r.LineLimit {
			r.curLineLength += i
			return 0, ErrTooLongLine
		}
		r.curLineLength = 1
		buf = buf[i+1:]
	}

	return n, nil
}
