package smtp

// Tests for jetrelay's patches (see PATCHES.md).

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"math/rand"
	"strings"
	"testing"
)

// referenceData is upstream v0.25.1's byte-at-a-time reader, unlimited.
func referenceData(in []byte) ([]byte, error) {
	r := &dataReader{r: bufio.NewReader(bytes.NewReader(in))}
	var out []byte
	for {
		c, err := r.r.ReadByte()
		if err != nil {
			return out, io.ErrUnexpectedEOF
		}
		if r.step(c) {
			out = append(out, c)
		}
		if r.state == stateEOF {
			return out, nil
		}
	}
}

// readPatched reads in through the patched reader with a small bufio buffer
// and reads of size chunk, so buffer and read boundaries fall everywhere.
func readPatched(in []byte, bufSize, chunk int, limit int64) ([]byte, []byte, error) {
	br := bufio.NewReaderSize(bytes.NewReader(in), bufSize)
	r := &dataReader{r: br, limited: limit > 0, n: limit}
	var out []byte
	b := make([]byte, chunk)
	for {
		n, err := r.Read(b)
		out = append(out, b[:n]...)
		if err == io.EOF {
			rest, _ := io.ReadAll(br)
			return out, rest, nil
		}
		if err != nil {
			return out, nil, err
		}
	}
}

func TestDataReaderMatchesUpstream(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	alphabet := []byte("ab.\r\n")
	for i := 0; i < 20000; i++ {
		in := make([]byte, rng.Intn(200))
		for j := range in {
			in[j] = alphabet[rng.Intn(len(alphabet))]
		}
		in = append(in, "\r\n.\r\nNEXT"...)
		want, werr := referenceData(in)
		got, rest, err := readPatched(in, 16+rng.Intn(32), 1+rng.Intn(64), 0)
		if (werr == nil) != (err == nil) || !bytes.Equal(got, want) {
			t.Fatalf("input %q:\n got %q, %v\nwant %q, %v", in, got, err, want, werr)
		}
		if err == nil && !bytes.HasSuffix(in, rest) {
			t.Fatalf("input %q: left %q unread", in, rest)
		}
	}
}

func FuzzDataReader(f *testing.F) {
	f.Add([]byte("Subject: x\r\n\r\n..dot\r\nbody\r\n.\r\n"), 16, 7)
	f.Fuzz(func(t *testing.T, in []byte, bufSize, chunk int) {
		bufSize = 16 + abs(bufSize)%4096
		chunk = 1 + abs(chunk)%8192
		want, werr := referenceData(in)
		got, _, err := readPatched(in, bufSize, chunk, 0)
		if (werr == nil) != (err == nil) || !bytes.Equal(got, want) {
			t.Fatalf("got %q, %v; want %q, %v", got, err, want, werr)
		}
	})
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}

func TestDataReaderLimitCountsContentOnly(t *testing.T) {
	body := strings.Repeat("x", 98) + "\r\n" // 100 bytes of content
	in := []byte(body + ".\r\nNEXT")
	for _, chunk := range []int{1, 7, 100, 4096} {
		got, rest, err := readPatched(in, 16, chunk, 100)
		if err != nil || string(got) != body || string(rest) != "NEXT" {
			t.Fatalf("chunk %d, limit = size: got %d bytes, rest %q, %v", chunk, len(got), rest, err)
		}
		_, _, err = readPatched(in, 16, chunk, 99)
		if !errors.Is(err, ErrDataTooLarge) {
			t.Fatalf("chunk %d, limit = size-1: err %v, want ErrDataTooLarge", chunk, err)
		}
	}
}

// After ErrDataTooLarge the reader must still find the end marker when
// drained unlimited, wherever the limit struck.
func TestDataReaderDrainAfterLimit(t *testing.T) {
	in := []byte("ab\r\n..c\r\nd\r\n.\r\nNEXT")
	for limit := int64(1); limit < 11; limit++ { // the content is 11 bytes
		br := bufio.NewReaderSize(bytes.NewReader(in), 16)
		r := &dataReader{r: br, limited: true, n: limit}
		_, err := io.ReadAll(r)
		if !errors.Is(err, ErrDataTooLarge) {
			t.Fatalf("limit %d: %v", limit, err)
		}
		r.limited = false
		if _, err := io.Copy(io.Discard, r); err != nil {
			t.Fatalf("limit %d: drain: %v", limit, err)
		}
		if rest, _ := io.ReadAll(br); string(rest) != "NEXT" {
			t.Fatalf("limit %d: left %q", limit, rest)
		}
	}
}

func BenchmarkDataReader(b *testing.B) {
	var msg bytes.Buffer
	for msg.Len() < 100*1024 {
		msg.WriteString(strings.Repeat("0123456789", 7) + "abcdef\r\n")
	}
	msg.WriteString(".\r\n")
	in := msg.Bytes()
	b.Run("runs", func(b *testing.B) {
		b.SetBytes(int64(len(in)))
		buf := make([]byte, 32*1024)
		for i := 0; i < b.N; i++ {
			r := &dataReader{r: bufio.NewReaderSize(bytes.NewReader(in), 4096)}
			for {
				if _, err := r.Read(buf); err != nil {
					break
				}
			}
		}
	})
	b.Run("bytewise", func(b *testing.B) {
		b.SetBytes(int64(len(in)))
		buf := make([]byte, 32*1024)
		for i := 0; i < b.N; i++ {
			r := &dataReader{r: bufio.NewReaderSize(bytes.NewReader(in), 4096)}
			n := 0
			for r.state != stateEOF {
				c, err := r.r.ReadByte()
				if err != nil {
					b.Fatal(err)
				}
				if r.step(c) {
					buf[n%len(buf)] = c
					n++
				}
			}
		}
	})
}
