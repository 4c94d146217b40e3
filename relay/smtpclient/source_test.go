package smtpclient_test

import (
	"context"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/jetrelay/jetrelay/relay/relaytest"
	"github.com/jetrelay/jetrelay/relay/smtpclient"
)

// sourceMX records each session's remote address and EHLO name; its MAIL
// answers mailErr when set.
type sourceMX struct {
	mu      sync.Mutex
	remotes []string
	helos   []string
	mailErr *smtp.SMTPError
}

type sourceSession struct {
	mx   *sourceMX
	conn *smtp.Conn
}

func (s *sourceSession) Mail(string, *smtp.MailOptions) error {
	s.mx.mu.Lock()
	defer s.mx.mu.Unlock()
	host, _, _ := net.SplitHostPort(s.conn.Conn().RemoteAddr().String())
	s.mx.remotes = append(s.mx.remotes, host)
	s.mx.helos = append(s.mx.helos, s.conn.Hostname())
	if s.mx.mailErr != nil {
		return s.mx.mailErr
	}
	return nil
}
func (s *sourceSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s *sourceSession) Data(r io.Reader) error               { _, err := io.Copy(io.Discard, r); return err }
func (s *sourceSession) Reset()                               {}
func (s *sourceSession) Logout() error                        { return nil }

func startSourceMX(t *testing.T) (*sourceMX, string, int) {
	t.Helper()
	mx := &sourceMX{}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &sourceSession{mx: mx, conn: c}, nil
	}))
	srv.Domain = "mx.test"
	srv.ReadTimeout, srv.WriteTimeout = time.Minute, time.Minute
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return mx, "127.0.0.1", ln.Addr().(*net.TCPAddr).Port
}

// An attempt with a source binds its address as the connection's local
// address and says its EHLO name; replies reach Observe. The plain
// loopback test dialer is not a *net.Dialer, so it binds through
// SourceDialer; a *net.Dialer is copied with LocalAddr.
func TestDeliverWithSource(t *testing.T) {
	t.Parallel()
	mx, ip, port := startSourceMX(t)
	z := newZone()
	z.add("src.test", ip)
	for i, dialer := range []smtpclient.Dialer{&net.Dialer{}, &fromDialer{}} {
		c := newClient(t, z, port, func(o *smtpclient.Options) { o.Dialer = dialer })
		src := netip.MustParseAddr([]string{"127.0.0.11", "127.0.0.12"}[i])
		var seen []smtpclient.Reply
		a := deliverWith(t, c, "x@src.test", smtpclient.AttemptOptions{Source: src, Hostname: "mta-" + src.String(),
			Observe: func(r smtpclient.Reply, _ bool) { seen = append(seen, r) }})
		wantReply(t, a, 250, "2.0.0")
		mx.mu.Lock()
		remote, helo := mx.remotes[i], mx.helos[i]
		mx.mu.Unlock()
		if remote != src.String() || helo != "mta-"+src.String() {
			t.Fatalf("MX saw %s saying EHLO %s, want %s and mta-%s", remote, helo, src, src)
		}
		if len(seen) != 1 || seen[0].Code != 250 {
			t.Fatalf("observed %+v, want the final 250", seen)
		}
	}
	// A refusal is observed (not at the greeting), and the attempt keeps
	// the server's reply.
	mx.mu.Lock()
	mx.mailErr = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 28}, Message: "unusual rate"}
	mx.mu.Unlock()
	c := newClient(t, z, port)
	var seen []smtpclient.Reply
	var greeting []bool
	deliverWith(t, c, "x@src.test", smtpclient.AttemptOptions{Observe: func(r smtpclient.Reply, g bool) {
		seen, greeting = append(seen, r), append(greeting, g)
	}})
	if len(seen) != 1 || seen[0].Enh != "4.7.28" || greeting[0] {
		t.Fatalf("observed %+v (greeting %v), want 421 4.7.28 after the greeting", seen, greeting)
	}
}

// fromDialer binds through SourceDialer, loopback only.
type fromDialer struct{ relaytest.LoopbackDialer }

func (*fromDialer) DialFrom(ctx context.Context, network, address string, local netip.Addr) (net.Conn, error) {
	d := relaytest.LoopbackDialer{Dialer: net.Dialer{LocalAddr: &net.TCPAddr{IP: local.AsSlice()}}}
	return d.DialContext(ctx, network, address)
}

func deliverWith(t *testing.T, c *smtpclient.Client, rcpt string, o smtpclient.AttemptOptions) smtpclient.Attempt {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tr, err := c.MX(ctx, "src.test", false)
	if err != nil {
		t.Fatal(err)
	}
	m := &smtpclient.Message{From: "a@sender.test", Rcpts: []smtpclient.Recipient{{Addr: rcpt}},
		Body: []byte("Subject: x\r\n\r\nhello\r\n")}
	a := c.DeliverWith(ctx, tr, m, nil, o)
	if a.Session != nil {
		a.Session.Quit(time.Second)
	}
	return a
}
