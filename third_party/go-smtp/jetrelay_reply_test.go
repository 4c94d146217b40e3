package smtp

// Tests for the client's reply limits (see PATCHES.md).

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/textproto"
	"strings"
	"sync/atomic"
	"testing"
)

// endless yields n octets of 'a' without holding them.
type endless struct{ n int64 }

func (e *endless) Read(b []byte) (int, error) {
	if e.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > e.n {
		b = b[:e.n]
	}
	for i := range b {
		b[i] = 'a'
	}
	e.n -= int64(len(b))
	return len(b), nil
}

// pipeServer runs serve on the server end of a synchronous in-memory
// connection: every octet it writes has been read by the client.
func pipeServer(t *testing.T, serve func(net.Conn)) *Client {
	t.Helper()
	cc, sc := net.Pipe()
	go func() {
		defer sc.Close()
		serve(sc)
	}()
	c := NewClient(cc)
	t.Cleanup(func() { c.Close() })
	return c
}

func TestReplyHugeLineReadsOneBuffer(t *testing.T) {
	var written atomic.Int64
	done := make(chan struct{})
	c := pipeServer(t, func(sc net.Conn) {
		defer close(done)
		io.WriteString(sc, "220-")
		n, _ := io.CopyBuffer(sc, &endless{n: 256 << 20}, make([]byte, 1024))
		written.Store(n)
	})
	err := c.Hello("client.example")
	var tooLong *ReplyTooLongError
	if !errors.As(err, &tooLong) || tooLong.Limit != ReplyLimitLineLength || tooLong.Max != DefaultMaxReplyLineLength {
		t.Fatalf("Hello = %v, want a line length ReplyTooLongError", err)
	}
	<-done // the client closed the connection, so the server stopped
	if n := written.Load(); n > 8<<10 {
		t.Fatalf("client read %d octets of a 256 MiB line, want at most one buffer", n)
	}
	if err := c.Noop(); err != tooLong {
		t.Fatalf("Noop after a broken reply = %v, want the same error", err)
	}
}

func TestReplyTooManyLines(t *testing.T) {
	c := pipeServer(t, func(sc net.Conn) {
		io.WriteString(sc, "220 mx\r\n")
		br := bufio.NewReader(sc)
		br.ReadString('\n')
		for i := 0; i < 200; i++ {
			if _, err := io.WriteString(sc, "250-EXT\r\n"); err != nil {
				return
			}
		}
		io.WriteString(sc, "250 END\r\n")
	})
	err := c.Hello("client.example")
	var tooLong *ReplyTooLongError
	if !errors.As(err, &tooLong) || tooLong.Limit != ReplyLimitLines || tooLong.Max != 100 {
		t.Fatalf("Hello = %v, want a lines ReplyTooLongError", err)
	}
}

func TestReplyTooManyBytes(t *testing.T) {
	line := "250-" + strings.Repeat("x", 1400) + "\r\n" // 50 of them: over 70 KiB
	c := pipeServer(t, func(sc net.Conn) {
		io.WriteString(sc, "220 mx\r\n")
		bufio.NewReader(sc).ReadString('\n')
		for i := 0; i < 50; i++ {
			if _, err := io.WriteString(sc, line); err != nil {
				return
			}
		}
		io.WriteString(sc, "250 END\r\n")
	})
	err := c.Hello("client.example")
	var tooLong *ReplyTooLongError
	if !errors.As(err, &tooLong) || tooLong.Limit != ReplyLimitBytes || tooLong.Max != 64<<10 {
		t.Fatalf("Hello = %v, want a bytes ReplyTooLongError", err)
	}
}

func TestReplyLimitsConfigurable(t *testing.T) {
	c := pipeServer(t, func(sc net.Conn) {
		io.WriteString(sc, "220 mx\r\n")
		bufio.NewReader(sc).ReadString('\n')
		io.WriteString(sc, "250-mx\r\n250-A\r\n250 B\r\n")
	})
	c.MaxReplyLines = 2
	var tooLong *ReplyTooLongError
	if err := c.Hello("client.example"); !errors.As(err, &tooLong) || tooLong.Max != 2 {
		t.Fatalf("Hello = %v, want a lines ReplyTooLongError at 2", err)
	}
}

func TestReplyMultiLineWithinLimits(t *testing.T) {
	long := strings.Repeat("y", DefaultMaxReplyLineLength-len("550 5.1.1 "))
	c := pipeServer(t, func(sc net.Conn) {
		br := bufio.NewReader(sc)
		io.WriteString(sc, "220-mx.example ESMTP\r\n220 ready\r\n")
		br.ReadString('\n')
		io.WriteString(sc, "250-mx.example\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-X-LONG "+long[9:]+"\r\n250 8BITMIME\r\n")
		br.ReadString('\n')
		io.WriteString(sc, "550-5.1.1 no such user\r\n550-5.1.1 really\r\n550 5.1.1 "+long+"\n")
		br.ReadString('\n')
		io.WriteString(sc, "250\r\n")
	})
	if err := c.Hello("client.example"); err != nil {
		t.Fatal(err)
	}
	if ok, v := c.Extension("SIZE"); !ok || v != "1000" {
		t.Fatalf("SIZE = %v %q", ok, v)
	}
	if ok, _ := c.Extension("8BITMIME"); !ok {
		t.Fatal("8BITMIME not seen")
	}
	err := c.Mail("a@example.org", nil)
	var se *SMTPError
	if !errors.As(err, &se) || se.Code != 550 || se.EnhancedCode != (EnhancedCode{5, 1, 1}) ||
		se.Message != "no such user\nreally\n"+long {
		t.Fatalf("Mail = %#v", err)
	}
	if err := c.Noop(); err != nil { // a bare "250" is a complete reply (RFC 5321 section 4.2)
		t.Fatalf("Noop = %v", err)
	}
}

// FuzzReadReply: the reply reader never breaks its limits, and any reply
// textproto reads (within the limits) it reads the same way.
func FuzzReadReply(f *testing.F) {
	for _, s := range []string{
		"250 ok\r\n", "250-a\r\n250-b\r\n250 c\r\n", "250-a\r\n251 b\r\n250 c\r\n", "550 5.1.1 x\n",
		"220", "2500 x\r\n", "25x ok\r\n", "250-\r\n250 \r\n", "250 " + strings.Repeat("z", 40) + "\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		lim := replyLimits{lines: 5, lineLen: 30, bytes: 80}
		code, msg, err := readReply(bufio.NewReaderSize(bytes.NewReader(in), 16), lim)
		var tooLong *ReplyTooLongError
		if errors.As(err, &tooLong) {
			return
		}
		if err == nil && (strings.Count(msg, "\n") >= lim.lines || len(msg) > lim.bytes || code < 100 || code > 999) {
			t.Fatalf("reply %d %q breaks the limits", code, msg)
		}
		if len(in) == 0 || in[len(in)-1] != '\n' {
			return
		}
		for _, l := range strings.Split(string(in), "\n") {
			if len(strings.TrimSuffix(l, "\r")) == 3 {
				return // a bare code ends a reply here; textproto wants a space
			}
		}
		wcode, wmsg, werr := textproto.NewReader(bufio.NewReader(bytes.NewReader(in))).ReadResponse(0)
		if werr == nil && (err != nil || code != wcode || msg != wmsg) {
			t.Fatalf("readReply = %d %q %v, textproto = %d %q", code, msg, err, wcode, wmsg)
		}
	})
}
