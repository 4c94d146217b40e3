package relaytest

import (
	"bufio"
	"io"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// MeasureMaxMessage bounds one message a MeasureMX reads.
const MeasureMaxMessage = 1 << 20

// MeasureMX is a plaintext fake MX on loopback that measures what traffic
// shaping must bound: the connections open at once (from the session's
// start to QUIT read or close), when each message arrived, and from which
// address and EHLO name.
type MeasureMX struct {
	// Addr is the listening address (host:port).
	Addr string
	// IP is the listening IP address.
	IP string

	mu        sync.Mutex
	open      map[*smtp.Conn]bool
	maxOpen   int
	conns     int // sessions (connections that greeted)
	perConn   int // the most messages one connection carried
	msgs      []Arrival
	mailReply func() *smtp.SMTPError
}

// Arrival is one accepted message.
type Arrival struct {
	ID       string // Message-ID without <>
	At       time.Time
	Remote   string // the client's IP address
	Helo     string // the client's HELO/EHLO name
	MailFrom string
	Rcpts    []string
}

// StartMeasureMX listens on ip:port (port 0: any free port); it is
// stopped at test end. ip "" picks a 127.0.0.x address on which port is
// free, as FakeMX does: tests that put several servers on one harness
// port must not name fixed addresses, which another server on that port
// may already hold (FakeMX's own pick among the same addresses).
func StartMeasureMX(t testing.TB, ip string, port int) *MeasureMX {
	t.Helper()
	m := &MeasureMX{open: map[*smtp.Conn]bool{}}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		m.mu.Lock()
		m.open[c] = true
		m.maxOpen = max(m.maxOpen, len(m.open))
		m.conns++
		m.mu.Unlock()
		return &measureSession{mx: m, conn: c}, nil
	}))
	srv.Domain = "mx.test"
	srv.ReadTimeout, srv.WriteTimeout = time.Minute, time.Minute
	srv.MaxMessageBytes = MeasureMaxMessage
	srv.ErrorLog = quietLog{}
	// A connection stops counting when QUIT is read: before the reply,
	// so before the client can release its connection slot.
	srv.CommandHook = func(c *smtp.Conn, cmd string) error {
		if strings.EqualFold(cmd, "QUIT") {
			m.end(c)
		}
		return nil
	}
	var ln net.Listener
	if ip != "" {
		if a := net.ParseIP(ip); a == nil || !a.IsLoopback() {
			t.Fatalf("measure mx: %q is not a loopback address", ip)
		}
		var err error
		if ln, err = net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port))); err != nil {
			t.Fatal(err)
		}
	} else {
		ln = listenLoopback(t, port)
	}
	m.Addr = ln.Addr().String()
	m.IP, _, _ = net.SplitHostPort(m.Addr)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return m
}

type quietLog struct{}

func (quietLog) Printf(string, ...any) {}
func (quietLog) Println(...any)        {}

func (m *MeasureMX) end(c *smtp.Conn) {
	m.mu.Lock()
	delete(m.open, c)
	m.mu.Unlock()
}

// SetMailReply makes MAIL answer what f returns (nil f or nil reply:
// accepted).
func (m *MeasureMX) SetMailReply(f func() *smtp.SMTPError) {
	m.mu.Lock()
	m.mailReply = f
	m.mu.Unlock()
}

// Arrivals returns a copy of the accepted messages, in arrival order.
func (m *MeasureMX) Arrivals() []Arrival {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Arrival(nil), m.msgs...)
}

// Peak returns the most connections open at once and how many there were.
func (m *MeasureMX) Peak() (most, total int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.maxOpen, m.conns
}

// PerConnection returns the most messages one connection carried.
func (m *MeasureMX) PerConnection() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.perConn
}

type measureSession struct {
	mx    *MeasureMX
	conn  *smtp.Conn
	from  string
	rcpts []string
	n     int // messages on this connection
}

func (s *measureSession) Mail(from string, _ *smtp.MailOptions) error {
	s.mx.mu.Lock()
	f := s.mx.mailReply
	s.mx.mu.Unlock()
	if f != nil {
		if err := f(); err != nil {
			return err
		}
	}
	s.from = from
	return nil
}

func (s *measureSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.rcpts = append(s.rcpts, to)
	return nil
}

func (s *measureSession) Data(r io.Reader) error {
	br := bufio.NewReader(io.LimitReader(r, MeasureMaxMessage))
	hdr, err := textproto.NewReader(br).ReadMIMEHeader()
	if err != nil && len(hdr) == 0 {
		return err
	}
	if _, err := io.Copy(io.Discard, br); err != nil {
		return err
	}
	host, _, _ := net.SplitHostPort(s.conn.Conn().RemoteAddr().String())
	a := Arrival{
		ID:       strings.Trim(strings.TrimSpace(hdr.Get("Message-Id")), "<>"),
		At:       time.Now(),
		Remote:   host,
		Helo:     s.conn.Hostname(),
		MailFrom: s.from,
		Rcpts:    append([]string(nil), s.rcpts...),
	}
	s.mx.mu.Lock()
	defer s.mx.mu.Unlock()
	s.n++
	s.mx.perConn = max(s.mx.perConn, s.n)
	s.mx.msgs = append(s.mx.msgs, a)
	return nil
}

func (s *measureSession) Reset() { s.from, s.rcpts = "", nil }

func (s *measureSession) Logout() error {
	s.mx.end(s.conn)
	return nil
}

// MaxInWindow is the most arrivals within any window of length w.
func MaxInWindow(arr []Arrival, w time.Duration) int {
	most := 0
	for i := range arr {
		n := 0
		for j := range arr {
			if d := arr[j].At.Sub(arr[i].At); d >= 0 && d < w {
				n++
			}
		}
		most = max(most, n)
	}
	return most
}
