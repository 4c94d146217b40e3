package smtp

// Tests for the Server.Rejected patch (see PATCHES.md).

import (
	"bufio"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
)

type rejectBackend struct{}

func (rejectBackend) NewSession(c *Conn) (Session, error) { return rejectSession{}, nil }

type rejectSession struct{}

func (rejectSession) Reset()        {}
func (rejectSession) Logout() error { return nil }
func (rejectSession) Mail(from string, opts *MailOptions) error {
	if from == "refused@example.org" {
		return &SMTPError{Code: 553, EnhancedCode: EnhancedCode{5, 7, 1}, Message: "not yours"}
	}
	return nil
}
func (rejectSession) Rcpt(to string, opts *RcptOptions) error { return nil }
func (rejectSession) Data(r io.Reader) error {
	_, err := io.Copy(io.Discard, r)
	return err
}

func TestRejectedHook(t *testing.T) {
	var mu sync.Mutex
	var got []string
	s := NewServer(rejectBackend{})
	s.Domain = "localhost"
	s.AllowInsecureAuth = true
	s.MaxMessageBytes = 100
	s.MaxRecipients = 1
	s.Rejected = func(c *Conn, code int, enh EnhancedCode, text string) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, strings.Join([]string{itoa(code), itoa(enh[0]) + "." + itoa(enh[1]) + "." + itoa(enh[2])}, " "))
	}
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
	cmd := func(line string) string {
		t.Helper()
		if line != "" {
			io.WriteString(c, line+"\r\n")
		}
		var last string
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("%q: %v", line, err)
			}
			if len(l) < 4 || l[3] != '-' {
				last = l
				break
			}
		}
		return last[:3]
	}
	cmd("")
	for _, step := range []struct{ line, code string }{
		{"EHLO client", "250"},
		{"MAIL FROM:<a@example.org> SIZE=101", "552"}, // server's own: reported
		{"MAIL FROM:<refused@example.org>", "553"},    // the session's: not reported
		{"MAIL FROM:<a@example.org> SIZE=100", "250"},
		{"RCPT TO:<b@example.org>", "250"},
		{"RCPT TO:<c@example.org>", "452"},                     // over MaxRecipients: reported
		{"BDAT 101 LAST\r\n" + strings.Repeat("x", 99), "552"}, // + the CRLF cmd adds
	} {
		if code := cmd(step.line); code != step.code {
			t.Fatalf("%q: reply %s, want %s", step.line, code, step.code)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{"552 5.3.4", "452 4.5.3", "552 5.3.4"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("Rejected saw %q, want %q", got, want)
	}
}

func itoa(n int) string {
	const digits = "0123456789"
	if n < 10 {
		return digits[n : n+1]
	}
	return itoa(n/10) + digits[n%10:n%10+1]
}

// BenchmarkDataReader reads a 100 KiB message of 78-octet lines through
// the patched reader ("runs") and through upstream's loop of one ReadByte
// per byte ("bytewise"): go test -run x -bench DataReader .
