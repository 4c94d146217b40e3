package submit

import (
	"bytes"
	"errors"
	"io"
	"runtime"
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
		{"hint in a pooled class", 100 << 10, 8 << 20, 100 << 10, 16 << 20, nil},
		{"grown through the classes", 200 << 10, 8 << 20, 0, 16 << 20, nil},
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
				// a pooled class holds at most twice the message
				if got := budget.used.Load(); got != sp.held || got > 2*int64(c.size)+headroom+int64(readBufStart)+2 {
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

// TestSpoolBuffersReused: a buffer of a pooled class goes back to its pool
// and serves the next message of that size class; a message larger than
// the largest class gets a buffer of its own that is not pooled.
func TestSpoolBuffersReused(t *testing.T) {
	budget := &inflight{max: 16 << 20}
	read := func(n int, hint int64) *spool {
		t.Helper()
		in := bytes.Repeat([]byte("x"), n)
		sp, err := readSpool(bytes.NewReader(in), budget, 8<<20, hint)
		if err != nil || !bytes.Equal(sp.message(), in) {
			t.Fatalf("readSpool(%d): %v", n, err)
		}
		return sp
	}
	sp := read(100<<10, 100<<10)
	if !sp.pooled || cap(sp.buf) != headroom+128<<10 || sp.held != headroom+128<<10 {
		t.Fatalf("100 KiB with SIZE: pooled %v, cap %d, held %d; want the 128 KiB class", sp.pooled, cap(sp.buf), sp.held)
	}
	sp.release()
	big := read(300<<10, 300<<10)
	if big.pooled {
		t.Fatal("a buffer above the largest class is pooled")
	}
	big.release()
	if budget.used.Load() != 0 {
		t.Fatalf("%d octets still charged", budget.used.Load())
	}
	// Reused: 50 messages of 100 KiB allocate far less than one buffer
	// each (sync.Pool may drop its buffers at a GC, and under -race it
	// drops a quarter of them on purpose, hence the margin: half).
	in := bytes.Repeat([]byte("y"), 100<<10)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 50 {
		sp, err := readSpool(bytes.NewReader(in), budget, 8<<20, int64(len(in)))
		if err != nil {
			t.Fatal(err)
		}
		sp.release()
	}
	runtime.ReadMemStats(&after)
	if got := after.TotalAlloc - before.TotalAlloc; got > 25*(headroom+128<<10) {
		t.Fatalf("50 messages of 100 KiB allocated %d bytes: buffers not reused", got)
	}
}
