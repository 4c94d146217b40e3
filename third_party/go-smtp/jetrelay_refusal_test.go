package smtp

// Tests for the refusal codes (see PATCHES.md): a malformed MAIL/RCPT path
// is 501 5.1.7 / 501 5.1.3, an over-long AUTH response 500 5.5.6 (an
// over-long command line, 500 5.5.2: TestLineTooLong).

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/emersion/go-sasl"
)

func TestMalformedPathCodes(t *testing.T) {
	var log rejectedLog
	c, br := hookServer(t, func(s *Server) { s.Rejected = log.hook })
	var want []string
	for _, step := range []struct{ line, reply string }{
		{"EHLO client", "250 "},
		{"MAIL FROM:<alice.sender.test>", "501 5.1.7 Bad sender address syntax"},
		{"MAIL FROM:<@>", "501 5.1.7 "},
		{"MAIL FROM:<alice@example.org", "501 5.1.7 "},
		{"MAIL FROM <alice@example.org>", "501 5.5.2 "}, // no FROM: keyword
		{"MAIL FROM:<alice@example.org> A=B=C", "501 5.5.4 "},
		{"MAIL FROM:<alice@example.org>", "250 "},
		{"RCPT TO:<bob.example>", "501 5.1.3 Bad recipient address syntax"},
		{"RCPT TO:<bob@>", "501 5.1.3 "},
		{"RCPT TO:<>", "501 5.1.3 "},
		{"RCPT <bob@example.org>", "501 5.5.2 "}, // no TO: keyword
		{"RCPT TO:<bob@example.org> A=B=C", "501 5.5.4 "},
		{"RCPT TO:<bob@example.org>", "250 "},
	} {
		io.WriteString(c, step.line+"\r\n")
		if got := replyOf(t, br); !strings.HasPrefix(got, step.reply) {
			t.Fatalf("%q: reply %q, want %q…", step.line, got, step.reply)
		}
		if step.reply[0] != '2' {
			want = append(want, step.reply[:9])
		}
	}
	if got := log.String(); got != strings.Join(want, ",") {
		t.Fatalf("Rejected saw %q, want %q", got, want)
	}
}

type plainBackend struct{}

func (plainBackend) NewSession(*Conn) (Session, error) { return plainSession{}, nil }

type plainSession struct{ hookSession }

func (plainSession) AuthMechanisms() []string { return []string{sasl.Plain} }
func (plainSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(string, string, string) error { return nil }), nil
}

func TestAuthLineTooLong(t *testing.T) {
	var log rejectedLog
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(plainBackend{})
	s.Domain = "localhost"
	s.AllowInsecureAuth = true
	s.Rejected = log.hook
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	br := bufio.NewReader(c)
	replyOf(t, br)
	io.WriteString(c, "EHLO client\r\nAUTH PLAIN\r\n")
	replyOf(t, br)
	if got := replyOf(t, br); got != "334" && got != "334 " {
		t.Fatalf("AUTH PLAIN: %q, want 334", got)
	}
	out := fatalAfterUnread(t, c, br, strings.Repeat("QUFB", 1000)+"\r\n", 16<<10)
	if want := "500 5.5.6 Authentication Exchange line is too long\r\n"; out != want {
		t.Fatalf("server wrote %q, want %q, then EOF", out, want)
	}
	if got, want := log.String(), "500 5.5.6"; got != want {
		t.Fatalf("Rejected saw %q, want %q (reported once)", got, want)
	}
}

// TestHelloControlCharacters: a HELO/EHLO argument with a control
// character is refused 501 5.5.4, and no reply line ever carries a
// control character the client sent (found by jetrelay's FuzzSession:
// "EHLO 0\r00" was echoed as "250-Hello 0\r00").
func TestHelloControlCharacters(t *testing.T) {
	for _, greet := range []string{"EHLO 0\r00", "HELO a\x1bb", "EHLO x\x7fy"} {
		if got := replyText("Hello " + greet[5:]); strings.ContainsAny(got, "\r\x1b\x7f") {
			t.Errorf("replyText(%q) = %q", greet, got)
		}
		if printableDomain(greet[5:]) {
			t.Errorf("printableDomain(%q) = true", greet[5:])
		}
	}
	if !printableDomain("relay.example.com") || !printableDomain("[192.0.2.1]") || !printableDomain("bücher.example") {
		t.Error("a valid HELO argument refused")
	}
}

// TestHelloControlCharactersServer: through a server, "EHLO 0\r00" gets
// 501 5.5.4 and the session goes on with a valid EHLO.
func TestHelloControlCharactersServer(t *testing.T) {
	c, br := hookServer(t, func(s *Server) {})
	for _, step := range []struct{ line, reply string }{
		{"EHLO 0\r00", "501 5.5.4 "},
		{"HELO a\x1bb", "501 5.5.4 "},
		{"EHLO client", "250 "},
	} {
		io.WriteString(c, step.line+"\r\n")
		if got := replyOf(t, br); !strings.HasPrefix(got, step.reply) {
			t.Fatalf("%q: reply %q, want %q…", step.line, got, step.reply)
		}
	}
}
