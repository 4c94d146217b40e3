package smtpclient

import (
	"bufio"
	"bytes"
	"net/textproto"
	"testing"
)

// TestAppendDotStuffed checks the body encoding against textproto's
// DotWriter, which go-smtp's lock-step client uses.
func TestAppendDotStuffed(t *testing.T) {
	cases := []string{
		"", "a", "a\r\n", ".", ".\r\n", "..x\r\n", "a\r\n.b\r\n.\r\n", "a\nb\n", "a\r\nb",
		"x\r\n\r\n.\r\n\r\n", "line\r", "mid\rdle\r\n", "\r\n", "\n", ".\n.\n",
	}
	for _, in := range cases {
		var want bytes.Buffer
		bw := bufio.NewWriter(&want)
		w := textproto.NewWriter(bw).DotWriter()
		if _, err := w.Write([]byte(in)); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		_ = bw.Flush()
		if got := appendDotStuffed(nil, []byte(in)); !bytes.Equal(got, want.Bytes()) {
			t.Errorf("%q: got %q, want %q", in, got, want.Bytes())
		}
	}
}

func TestXtext(t *testing.T) {
	if got, want := xtext("a+b=c d"), "a+2Bb+3Dc+20d"; got != want {
		t.Errorf("xtext = %q, want %q", got, want)
	}
}

func FuzzAppendDotStuffed(f *testing.F) {
	f.Add([]byte("a\r\n.b\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		var want bytes.Buffer
		bw := bufio.NewWriter(&want)
		w := textproto.NewWriter(bw).DotWriter()
		_, _ = w.Write(in)
		_ = w.Close()
		_ = bw.Flush()
		if got := appendDotStuffed(nil, in); !bytes.Equal(got, want.Bytes()) {
			t.Errorf("%q: got %q, want %q", in, got, want.Bytes())
		}
	})
}
