package smtp

// Tests for the size-limit reply patch (see PATCHES.md).

import (
	"bufio"
	"net"
	"strings"
	"testing"
)

// TestSizeLimitReplyNamesTheLimit: SIZE= over the limit at MAIL and an
// oversized BDAT chunk are refused with 552 5.3.4 naming the limit.
func TestSizeLimitReplyNamesTheLimit(t *testing.T) {
	s := NewServer(rejectBackend{})
	s.Domain = "localhost"
	s.AllowInsecureAuth = true
	s.MaxMessageBytes = 100
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(l)
	defer s.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	read := func() string {
		var last string
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			last = strings.TrimRight(line, "\r\n")
			if len(last) < 4 || last[3] != '-' {
				return last
			}
		}
	}
	cmd := func(line string) string {
		if _, err := c.Write([]byte(line + "\r\n")); err != nil {
			t.Fatal(err)
		}
		return read()
	}
	read() // greeting
	cmd("EHLO client.example")
	const want = "552 5.3.4 message exceeds the size limit of 100 bytes"
	if got := cmd("MAIL FROM:<a@example.org> SIZE=101"); got != want {
		t.Fatalf("SIZE over the limit: %q, want %q", got, want)
	}
	cmd("MAIL FROM:<a@example.org>")
	cmd("RCPT TO:<b@example.org>")
	if got := cmd("BDAT 101 LAST\r\n" + strings.Repeat("x", 101)); got != want {
		t.Fatalf("BDAT over the limit: %q, want %q", got, want)
	}
}
