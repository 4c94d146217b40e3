package smtp

// Tests for the close after a final reply (see PATCHES.md): the reply
// reaches a client whose input is still unread (no reset).

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
)

// rejectedLog collects what Server.Rejected reports, as "code x.y.z".
type rejectedLog struct {
	mu  sync.Mutex
	got []string
}

func (l *rejectedLog) hook(_ *Conn, code int, enh EnhancedCode, _ string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.got = append(l.got, fmt.Sprintf("%d %d.%d.%d", code, enh[0], enh[1], enh[2]))
}

func (l *rejectedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.got, ",")
}

// replyOf reads one reply and returns its last line without CRLF.
func replyOf(t *testing.T, br *bufio.Reader) string {
	t.Helper()
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading a reply: %v", err)
		}
		if len(l) < 4 || l[3] != '-' {
			return strings.TrimRight(l, "\r\n")
		}
	}
}

// fatalAfterUnread writes in and then unread bytes of input the server never
// reads, and returns everything the server sent until it closed. The read
// must end in EOF: a server closing with unread input resets the
// connection, and the client may lose the final reply.
func fatalAfterUnread(t *testing.T, c net.Conn, br *bufio.Reader, in string, unread int) string {
	t.Helper()
	junk := strings.Repeat(strings.Repeat("j", 62)+"\r\n", unread/64)
	werr := make(chan error, 1)
	go func() {
		_, err := io.WriteString(c, in+junk)
		werr <- err
	}()
	out := readRest(t, br) // fails on a reset
	if err := <-werr; err != nil {
		t.Fatalf("writing: %v", err)
	}
	return out
}

func TestTooManyErrorsReplyArrives(t *testing.T) {
	var log rejectedLog
	c, br := hookServer(t, func(s *Server) { s.Rejected = log.hook })
	out := fatalAfterUnread(t, c, br, "EHLO client\r\nXYZA\r\nXYZB\r\nXYZC\r\nXYZD\r\nNOOP\r\n", 32<<10)
	if !strings.HasSuffix(out, "500 5.5.1 Too many errors. Quiting now\r\n") || strings.Contains(out, "250 2.0.0") {
		t.Fatalf("server wrote %q, want 4 errors and the too-many-errors reply, then EOF", out)
	}
	if got, want := log.String(), "500 5.5.2,500 5.5.2,500 5.5.2,500 5.5.2,500 5.5.1"; got != want {
		t.Fatalf("Rejected saw %q, want %q", got, want)
	}
}

func TestLineTooLong(t *testing.T) {
	var log rejectedLog
	c, br := hookServer(t, func(s *Server) { s.Rejected = log.hook })
	out := fatalAfterUnread(t, c, br, "MAIL FROM:<"+strings.Repeat("a", 3000)+">\r\n", 32<<10)
	if want := "500 5.5.2 Line too long, closing connection\r\n"; out != want {
		t.Fatalf("server wrote %q, want %q, then EOF", out, want)
	}
	if got, want := log.String(), "500 5.5.2"; got != want {
		t.Fatalf("Rejected saw %q, want %q", got, want)
	}
}

func TestCommandHookReplyArrives(t *testing.T) {
	c, br := hookServer(t, func(s *Server) {
		s.CommandHook = func(c *Conn, cmd string) error {
			if cmd == "QUIT" {
				return nil
			}
			return &SMTPError{Code: 421, EnhancedCode: EnhancedCode{4, 7, 0}, Message: "Go away"}
		}
	})
	out := fatalAfterUnread(t, c, br, "NOOP\r\n", 32<<10)
	if want := "421 4.7.0 Go away\r\n"; out != want {
		t.Fatalf("server wrote %q, want %q, then EOF", out, want)
	}
}

func TestQuitReplyArrives(t *testing.T) {
	c, br := hookServer(t, func(*Server) {})
	out := fatalAfterUnread(t, c, br, "QUIT\r\n", 32<<10)
	if want := "221 2.0.0 Bye\r\n"; out != want {
		t.Fatalf("server wrote %q, want %q, then EOF", out, want)
	}
}
