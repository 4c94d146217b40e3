package smtp

import (
	"bytes"
	"io"
	"math/rand"
	"testing"
)

// byteLineLimit is upstream's lineLimitReader.Read count, byte by byte:
// the reference the line-by-line count must agree with.
type byteLineLimit struct {
	R             io.Reader
	LineLimit     int
	curLineLength int
}

func (r *byteLineLimit) Read(b []byte) (int, error) {
	if r.curLineLength > r.LineLimit && r.LineLimit > 0 {
		return 0, ErrTooLongLine
	}
	n, err := r.R.Read(b)
	if err != nil {
		return n, err
	}
	if r.LineLimit == 0 {
		return n, nil
	}
	for _, chr := range b[:n] {
		if chr == '\n' {
			r.curLineLength = 0
		}
		r.curLineLength++
		if r.curLineLength > r.LineLimit {
			return 0, ErrTooLongLine
		}
	}
	return n, nil
}

// chunked returns its data in reads of the given sizes (then the rest).
type chunked struct {
	data  []byte
	sizes []int
}

func (c *chunked) Read(b []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := len(c.data)
	if len(c.sizes) > 0 {
		if c.sizes[0] < n {
			n = c.sizes[0]
		}
		c.sizes = c.sizes[1:]
	}
	n = copy(b, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

// TestLineLimitMatchesByteCount: every read of random text in random
// pieces gets the byte-by-byte count's answer (bytes, error), for limits
// around the line lengths, none and a negative one.
func TestLineLimitMatchesByteCount(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for round := 0; round < 3000; round++ {
		var data []byte
		for k, lines := 0, rng.Intn(12); k < lines; k++ {
			data = append(data, bytes.Repeat([]byte("x"), rng.Intn(40))...)
			if rng.Intn(4) > 0 {
				data = append(data, '\n')
			}
		}
		var sizes []int
		for k := 0; k < 8; k++ {
			sizes = append(sizes, rng.Intn(20)) // zero-byte reads too
		}
		limit := rng.Intn(45) - 1
		got := &lineLimitReader{R: &chunked{data, sizes}, LineLimit: limit}
		want := &byteLineLimit{R: &chunked{data, sizes}, LineLimit: limit}
		for step := 0; ; step++ {
			gb, wb := make([]byte, 16), make([]byte, 16)
			gn, gerr := got.Read(gb)
			wn, werr := want.Read(wb)
			if gn != wn || gerr != werr || !bytes.Equal(gb[:gn], wb[:wn]) {
				t.Fatalf("round %d (limit %d, %q in %v), read %d: %d %v, byte count %d %v",
					round, limit, data, sizes, step, gn, gerr, wn, werr)
			}
			if gerr != nil || step > 100 {
				break
			}
		}
	}
}

// BenchmarkLineLimitRead: a 100 KiB message body of 78-byte lines, in
// 4 KiB reads (the DATA path's bufio size).
func BenchmarkLineLimitRead(b *testing.B) {
	line := append(bytes.Repeat([]byte("y"), 76), '\r', '\n')
	body := bytes.Repeat(line, 100<<10/len(line))
	buf := make([]byte, 4096)
	b.SetBytes(int64(len(body)))
	for i := 0; i < b.N; i++ {
		r := &lineLimitReader{R: bytes.NewReader(body), LineLimit: 2000}
		for {
			if _, err := r.Read(buf); err != nil {
				break
			}
		}
	}
}
