package submit

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/emersion/go-smtp"
)

// countingReader counts what was read from it and notes what the budget
// held when the end was reached.
type countingReader struct {
	r      io.Reader
	n      int
	budget *inflight
	atEOF  int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	if err == io.EOF {
		c.atEOF = c.budget.used.Load()
	}
	return n, err
}

// TestReadSpool: small, block-joined and SIZE-hinted messages come out
// byte for byte with headroom in front; over the limit or over the budget
// the transfer is read to its end, nothing stays charged, and the error
// is the one that becomes the reply.
func TestReadSpool(t *testing.T) {
	data := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte('a' + i%26)
		}
		return b
	}
	cases := []struct {
		name             string
		size             int
		limit, hint, max int64
		want             error
	}{
		{"small", 3000, 1 << 20, 0, 4 << 20, nil},
		{"blocks", 3<<20 + 12345, 8 << 20, 0, 16 << 20, nil},
		{"hint exact", 2 << 20, 8 << 20, 2 << 20, 16 << 20, nil},
		{"larger than hint", 2<<20 + 5, 8 << 20, 100 << 10, 16 << 20, nil},
		{"over limit", 3 << 20, 2 << 20, 0, 16 << 20, smtp.ErrDataTooLarge},
		{"over budget in blocks", 5 << 20, 8 << 20, 0, 6 << 20, errInflight},
		{"over budget at start", 10, 1 << 20, 0, 1 << 10, errInflight},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			budget := &inflight{max: c.max}
			in := data(c.size)
			cr := &countingReader{r: bytes.NewReader(in), budget: budget}
			sp, err := readSpool(cr, budget, c.limit, c.hint)
			if !errors.Is(err, c.want) && err != c.want {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			if cr.n != c.size {
				t.Fatalf("read %d of %d octets: the transfer must be read to its end", cr.n, c.size)
			}
			if err != nil && cr.atEOF != 0 {
				t.Fatalf("%d octets charged while the refused transfer was drained", cr.atEOF)
			}
			if err == nil {
				if !bytes.Equal(sp.message(), in) {
					t.Fatal("message differs from what was sent")
				}
				f := frame(sp, sp.message())
				if f.off != headroom || &f.buf[0] != &sp.buf[0] {
					t.Fatal("message not framed in place")
				}
				if got := budget.used.Load(); got != sp.held || got > int64(c.size)+headroom+int64(readBufStart)+2 {
					t.Fatalf("charged %d for %d octets (held %d)", got, c.size, sp.held)
				}
			}
			sp.release()
			if got := budget.used.Load(); got != 0 {
				t.Fatalf("%d octets still charged after release", got)
			}
		})
	}
}
