package loadgen

import (
	"bytes"
	"math/rand/v2"
	"net/mail"
	"slices"
	"testing"
	"time"
)

func TestRenderExactSizeAndWellFormed(t *testing.T) {
	t.Parallel()
	date := []byte(time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC).Format(time.RFC1123Z))
	for _, size := range []int{512, 513, 600, 1000, 4096, 4097, 102400} {
		tmpl := newTemplate(size, "bench@example.test", "run1")
		var buf []byte
		for _, n := range []int64{1, 9, 10, 12345, 1 << 40} {
			rcpt := newRcptPattern("user{n}@example.test").appendTo(nil, n)
			buf = tmpl.render(buf, n, rcpt, date)
			if len(buf) != size {
				t.Fatalf("size %d n %d: rendered %d bytes", size, n, len(buf))
			}
			checkWellFormed(t, buf)
			m, err := mail.ReadMessage(bytes.NewReader(buf))
			if err != nil {
				t.Fatalf("size %d: parse: %v", size, err)
			}
			if to := m.Header.Get("To"); to != "<"+string(rcpt)+">" {
				t.Errorf("To = %q", to)
			}
			for _, h := range []string{"From", "Subject", "Date", "Message-Id", "Mime-Version", "Content-Type"} {
				if m.Header.Get(h) == "" {
					t.Errorf("size %d: no %s header", size, h)
				}
			}
		}
	}
}

// checkWellFormed: CRLF line ends only, lines at most 78 bytes, final CRLF.
func checkWellFormed(t *testing.T, msg []byte) {
	t.Helper()
	if !bytes.HasSuffix(msg, []byte("\r\n")) {
		t.Fatalf("no final CRLF: %q", msg[max(len(msg)-10, 0):])
	}
	for i, line := range bytes.Split(msg[:len(msg)-2], []byte("\r\n")) {
		if bytes.ContainsAny(line, "\r\n") || len(line) > 998 {
			t.Fatalf("line %d malformed: %q", i, line)
		}
	}
}

func TestRcptPattern(t *testing.T) {
	t.Parallel()
	for pat, want := range map[string]string{"user{n}@example.test": "user42@example.test", "a@b.test": "a@b.test", "{n}.{n}@x": "42.42@x"} {
		if got := string(newRcptPattern(pat).appendTo(nil, 42)); got != want {
			t.Errorf("%q -> %q, want %q", pat, got, want)
		}
	}
}

func TestHistogramQuantiles(t *testing.T) {
	t.Parallel()
	var h histogram
	vals := make([]time.Duration, 0, 10000)
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 10000; i++ {
		d := time.Duration(r.ExpFloat64() * float64(2*time.Millisecond))
		vals = append(vals, d)
		h.record(d)
	}
	slices.Sort(vals)
	for _, q := range []float64{0.5, 0.9, 0.99, 1} {
		exact := vals[int(q*float64(len(vals)))-1]
		got := h.quantile(q)
		if got < exact || float64(got) > float64(exact)*1.02 {
			t.Errorf("q%.2f = %v, exact %v", q, got, exact)
		}
	}
	if h.max != vals[len(vals)-1] {
		t.Errorf("max %v, want %v", h.max, vals[len(vals)-1])
	}
	for _, v := range []uint64{0, 1, 127, 128, 129, 255, 256, 1 << 20, 1<<40 - 1, 1 << 50} {
		i := bucketOf(v)
		if i < 0 || i >= numBuckets || (v < 1<<maxBits && bucketHigh(i) < v) || (i > 0 && v < 1<<maxBits && bucketHigh(i-1) >= v) {
			t.Errorf("value %d in bucket %d [.., %d]", v, i, bucketHigh(i))
		}
	}
}

func BenchmarkRender4KiB(b *testing.B)   { benchRender(b, 4096) }
func BenchmarkRender100KiB(b *testing.B) { benchRender(b, 100<<10) }

func benchRender(b *testing.B, size int) {
	tmpl := newTemplate(size, "bench@example.test", "run1")
	pat := newRcptPattern("user{n}@example.test")
	buf := make([]byte, 0, size+2)
	rcpt := make([]byte, 0, 64)
	var dates dateCache
	b.SetBytes(int64(size))
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		rcpt = pat.appendTo(rcpt[:0], int64(i))
		buf = tmpl.render(buf, int64(i), rcpt, dates.get(time.Now()))
	}
}
