package deliver_test

import (
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// shapeMX is a fake MX that measures what shaping must bound: the
// connections open at once (from the greeting to QUIT or close), when
// each message arrived, and from which address and EHLO name. Its MAIL
// answers what mailReply says (nil: accepted).
type shapeMX struct {
	ip        string
	mu        sync.Mutex
	open      map[*smtp.Conn]bool
	maxOpen   int
	msgs      []shapeMsg
	mailReply func() *smtp.SMTPError
}

// shapeMsg is one accepted message.
type shapeMsg struct {
	rcpt   string
	at     time.Time
	remote string // the client's IP address
	helo   string
}

// startShapeMX listens on ip:port.
func startShapeMX(t *testing.T, ip string, port int) *shapeMX {
	t.Helper()
	m := &shapeMX{ip: ip, open: map[*smtp.Conn]bool{}}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		m.mu.Lock()
		m.open[c] = true
		m.maxOpen = max(m.maxOpen, len(m.open))
		m.mu.Unlock()
		return &shapeSession{mx: m, conn: c}, nil
	}))
	srv.Domain = "mx.test"
	srv.ReadTimeout, srv.WriteTimeout = time.Minute, time.Minute
	srv.ErrorLog = discard{}
	// A connection ends for the count when QUIT is read: before the
	// reply, so before the client can release its slot.
	srv.CommandHook = func(c *smtp.Conn, cmd string) error {
		if cmd == "QUIT" {
			m.end(c)
		}
		return nil
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return m
}

type discard struct{}

func (discard) Printf(string, ...any) {}
func (discard) Println(...any)        {}

func (m *shapeMX) end(c *smtp.Conn) {
	m.mu.Lock()
	delete(m.open, c)
	m.mu.Unlock()
}

// messages returns a copy of the accepted messages.
func (m *shapeMX) messages() []shapeMsg {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]shapeMsg(nil), m.msgs...)
}

// peak is the most connections that were open at once.
func (m *shapeMX) peak() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.maxOpen
}

type shapeSession struct {
	mx    *shapeMX
	conn  *smtp.Conn
	rcpts []string
}

func (s *shapeSession) Mail(string, *smtp.MailOptions) error {
	s.mx.mu.Lock()
	f := s.mx.mailReply
	s.mx.mu.Unlock()
	if f != nil {
		if err := f(); err != nil {
			return err
		}
	}
	return nil
}

func (s *shapeSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.rcpts = append(s.rcpts, to)
	return nil
}

func (s *shapeSession) Data(r io.Reader) error {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	host, _, _ := net.SplitHostPort(s.conn.Conn().RemoteAddr().String())
	now := time.Now()
	s.mx.mu.Lock()
	defer s.mx.mu.Unlock()
	for _, rc := range s.rcpts {
		s.mx.msgs = append(s.mx.msgs, shapeMsg{rcpt: rc, at: now, remote: host, helo: s.conn.Hostname()})
	}
	return nil
}

func (s *shapeSession) Reset() { s.rcpts = nil }

func (s *shapeSession) Logout() error {
	s.mx.end(s.conn)
	return nil
}

// maxInWindow is the most arrivals within any window of length w.
func maxInWindow(msgs []shapeMsg, w time.Duration) int {
	most := 0
	for i := range msgs {
		n := 0
		for j := range msgs {
			if d := msgs[j].at.Sub(msgs[i].at); d >= 0 && d < w {
				n++
			}
		}
		most = max(most, n)
	}
	return most
}
