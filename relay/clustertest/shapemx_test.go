package clustertest

import (
	"bufio"
	"io"
	"net"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// shapeMX is a plaintext fake MX on loopback that measures what traffic
// shaping must bound: the connections open at once (from the session's
// start to QUIT read or close) and when each message arrived, by
// Message-ID.
type shapeMX struct {
	Addr string

	mu      sync.Mutex
	open    map[*smtp.Conn]bool
	maxOpen int
	conns   int
	msgs    []shapeArrival
}

// shapeArrival is one accepted message.
type shapeArrival struct {
	id string // Message-ID without <>
	at time.Time
}

// startShapeMX listens on 127.0.0.1 (any free port), stopped at test end.
func startShapeMX(t *testing.T) *shapeMX {
	t.Helper()
	m := &shapeMX{open: map[*smtp.Conn]bool{}}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		m.mu.Lock()
		m.open[c] = true
		m.maxOpen = max(m.maxOpen, len(m.open))
		m.conns++
		m.mu.Unlock()
		return &shapeSession{mx: m, conn: c}, nil
	}))
	srv.Domain = "mx.prov.test"
	srv.ReadTimeout, srv.WriteTimeout = time.Minute, time.Minute
	srv.MaxMessageBytes = maxSinkMessage
	srv.ErrorLog = discard{}
	// A connection stops counting when QUIT is read: before the reply,
	// so before the relay can release its connection slot.
	srv.CommandHook = func(c *smtp.Conn, cmd string) error {
		if strings.EqualFold(cmd, "QUIT") {
			m.end(c)
		}
		return nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m.Addr = ln.Addr().String()
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return m
}

func (m *shapeMX) end(c *smtp.Conn) {
	m.mu.Lock()
	delete(m.open, c)
	m.mu.Unlock()
}

// arrivals returns a copy of the accepted messages, in arrival order.
func (m *shapeMX) arrivals() []shapeArrival {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]shapeArrival(nil), m.msgs...)
}

// peak returns the most connections open at once and how many there were.
func (m *shapeMX) peak() (most, total int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.maxOpen, m.conns
}

type shapeSession struct {
	mx   *shapeMX
	conn *smtp.Conn
}

func (s *shapeSession) Mail(string, *smtp.MailOptions) error { return nil }
func (s *shapeSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s *shapeSession) Reset()                               {}

func (s *shapeSession) Data(r io.Reader) error {
	hdr, err := textproto.NewReader(bufio.NewReader(io.LimitReader(r, maxSinkMessage))).ReadMIMEHeader()
	if err != nil && len(hdr) == 0 {
		return err
	}
	_, _ = io.Copy(io.Discard, r)
	id := strings.Trim(strings.TrimSpace(hdr.Get("Message-Id")), "<>")
	s.mx.mu.Lock()
	s.mx.msgs = append(s.mx.msgs, shapeArrival{id: id, at: time.Now()})
	s.mx.mu.Unlock()
	return nil
}

func (s *shapeSession) Logout() error {
	s.mx.end(s.conn)
	return nil
}

// maxInWindow is the most arrivals within any window of length w.
func maxInWindow(msgs []shapeArrival, w time.Duration) int {
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
