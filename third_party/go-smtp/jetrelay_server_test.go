package smtp

// Tests for jetrelay's server hooks (see PATCHES.md): CommandHook,
// ReadTimeoutFunc, ReadTimeoutReply, TLSHandshakeFailed.

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

type hookBackend struct{}

func (hookBackend) NewSession(*Conn) (Session, error) { return hookSession{}, nil }

type hookSession struct{}

func (hookSession) Reset()                          {}
func (hookSession) Logout() error                   { return nil }
func (hookSession) Mail(string, *MailOptions) error { return nil }
func (hookSession) Rcpt(string, *RcptOptions) error { return nil }
func (hookSession) Data(r io.Reader) error          { _, err := io.Copy(io.Discard, r); return err }

func hookServer(t *testing.T, configure func(*Server)) (net.Conn, *bufio.Reader) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(hookBackend{})
	s.Domain = "localhost"
	configure(s)
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	if l, _ := br.ReadString('\n'); !strings.HasPrefix(l, "220 ") {
		t.Fatalf("greeting %q", l)
	}
	return c, br
}

// readRest reads what the server sends until it closes the connection.
func readRest(t *testing.T, br *bufio.Reader) string {
	t.Helper()
	b, err := io.ReadAll(br)
	if err != nil {
		t.Fatalf("reading until the server closes: %v", err)
	}
	return string(b)
}

func TestCommandHook(t *testing.T) {
	var (
		mu    sync.Mutex
		verbs []string
	)
	c, br := hookServer(t, func(s *Server) {
		s.CommandHook = func(c *Conn, cmd string) error {
			mu.Lock()
			defer mu.Unlock()
			verbs = append(verbs, cmd)
			if len(verbs) == 4 {
				return &SMTPError{Code: 421, EnhancedCode: EnhancedCode{4, 7, 0}, Message: "Too many commands"}
			}
			return nil
		}
	})
	io.WriteString(c, "ehlo client\r\nNOOP\r\n:\r\nNOOP\r\nNOOP\r\n")
	rest := readRest(t, br)
	if !strings.HasSuffix(rest, "421 4.7.0 Too many commands\r\n") || strings.Count(rest, "250 ") != 2 {
		t.Fatalf("server wrote %q, want EHLO and one NOOP answered, then the hook's 421 and the close", rest)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(verbs, ",") != "EHLO,NOOP,,NOOP" {
		t.Fatalf("hook saw %q", verbs)
	}
}

func TestCommandHookClosesSilently(t *testing.T) {
	c, br := hookServer(t, func(s *Server) {
		s.CommandHook = func(*Conn, string) error { return errors.New("gone") }
	})
	io.WriteString(c, "NOOP\r\n")
	if rest := readRest(t, br); rest != "" {
		t.Fatalf("server wrote %q, want nothing", rest)
	}
}

func TestReadTimeoutFunc(t *testing.T) {
	var mu sync.Mutex
	calls := 0
	c, br := hookServer(t, func(s *Server) {
		s.ReadTimeout = time.Millisecond // replaced by ReadTimeoutFunc
		s.ReadTimeoutFunc = func(*Conn) time.Duration {
			mu.Lock()
			defer mu.Unlock()
			if calls++; calls == 1 {
				return time.Minute // the first command has time
			}
			return 50 * time.Millisecond
		}
		s.ReadTimeoutReply = func(*Conn) *SMTPError {
			return &SMTPError{Code: 421, EnhancedCode: EnhancedCode{4, 4, 2}, Message: "Session over"}
		}
	})
	io.WriteString(c, "NOOP\r\n")
	if rest := readRest(t, br); !strings.HasPrefix(rest, "250 ") || !strings.HasSuffix(rest, "\r\n421 4.4.2 Session over\r\n") {
		t.Fatalf("server wrote %q, want the NOOP reply, then ReadTimeoutReply's", rest)
	}
}

func TestStartTLSHandshakeFailureCloses(t *testing.T) {
	cert, err := tls.X509KeyPair(localhostCert, localhostKey)
	if err != nil {
		t.Fatal(err)
	}
	failed := make(chan error, 1)
	c, br := hookServer(t, func(s *Server) {
		s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
		s.TLSHandshakeFailed = func(c *Conn, err error) { failed <- err }
	})
	io.WriteString(c, "EHLO client\r\nSTARTTLS\r\n")
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(l, "220 ") {
			break
		}
	}
	io.WriteString(c, "EHLO plaintext-after-starttls\r\nMAIL FROM:<a@example.org>\r\n")
	rest, _ := io.ReadAll(br) // a TLS alert may come; a reset is fine
	if strings.Contains(string(rest), "550") || strings.Contains(string(rest), "250") {
		t.Fatalf("server answered in plaintext after a failed handshake: %q", rest)
	}
	select {
	case err := <-failed:
		if err == nil {
			t.Fatal("TLSHandshakeFailed got a nil error")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("TLSHandshakeFailed not called")
	}
}

func TestStartTLSStateAfterHandshake(t *testing.T) {
	cert, err := tls.X509KeyPair(localhostCert, localhostKey)
	if err != nil {
		t.Fatal(err)
	}
	tlsUp := make(chan bool, 4)
	c, br := hookServer(t, func(s *Server) {
		s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
		s.CommandHook = func(c *Conn, cmd string) error {
			_, ok := c.TLSConnectionState()
			tlsUp <- ok
			return nil
		}
	})
	io.WriteString(c, "STARTTLS\r\n")
	if l, _ := br.ReadString('\n'); !strings.HasPrefix(l, "220 ") {
		t.Fatalf("STARTTLS reply %q", l)
	}
	tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
	io.WriteString(tc, "NOOP\r\n")
	if l, _ := bufio.NewReader(tc).ReadString('\n'); !strings.HasPrefix(l, "250 ") {
		t.Fatalf("NOOP over TLS: %q", l)
	}
	if before, after := <-tlsUp, <-tlsUp; before || !after {
		t.Fatalf("TLSConnectionState ok: at STARTTLS %v, after it %v", before, after)
	}
}
