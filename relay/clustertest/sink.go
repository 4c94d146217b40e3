package clustertest

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/textproto"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// maxSinkMessage bounds one delivered message the sink reads.
const maxSinkMessage = 1 << 20

// Sink is a loopback SMTP server that counts deliveries per Message-ID.
type Sink struct {
	Addr string // host:port it listens on

	srv   *smtp.Server
	mu    sync.Mutex
	got   map[string]int       // Message-ID (without <>) -> deliveries
	first map[string]time.Time // Message-ID -> first arrival
	all   int
}

// StartSink listens on 127.0.0.1:port (0 = any free port) and serves.
func StartSink(port string) (*Sink, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", port))
	if err != nil {
		return nil, err
	}
	s := &Sink{Addr: ln.Addr().String(), got: map[string]int{}, first: map[string]time.Time{}}
	s.srv = smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		return &sinkSession{s: s}, nil
	}))
	s.srv.Domain = "sink.cluster.test"
	s.srv.ReadTimeout = time.Minute
	s.srv.WriteTimeout = time.Minute
	s.srv.MaxRecipients = 1000
	s.srv.MaxMessageBytes = maxSinkMessage
	s.srv.ErrorLog = discard{}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// Close stops the sink.
func (s *Sink) Close() error { return s.srv.Close() }

// Count returns how often the message with this Message-ID arrived.
func (s *Sink) Count(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.got[id]
}

// Total returns the number of messages delivered (every Message-ID).
func (s *Sink) Total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.all
}

// Snapshot returns a copy of the per-Message-ID counts.
func (s *Sink) Snapshot() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.got))
	for k, v := range s.got {
		out[k] = v
	}
	return out
}

// FirstArrival returns when the message with this Message-ID first
// arrived (zero if it did not).
func (s *Sink) FirstArrival(id string) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.first[id]
}

func (s *Sink) record(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.all++
	if id != "" {
		if s.got[id]++; s.got[id] == 1 {
			s.first[id] = time.Now()
		}
	}
}

type sinkSession struct{ s *Sink }

func (*sinkSession) Mail(string, *smtp.MailOptions) error { return nil }
func (*sinkSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (*sinkSession) Reset()                               {}
func (*sinkSession) Logout() error                        { return nil }

// Data reads the header section for the Message-ID, then drains the body.
func (ss *sinkSession) Data(r io.Reader) error {
	br := bufio.NewReader(io.LimitReader(r, maxSinkMessage))
	h, err := textproto.NewReader(br).ReadMIMEHeader()
	if err != nil && !errors.Is(err, io.EOF) {
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "bad header"}
	}
	if _, err := io.Copy(io.Discard, br); err != nil {
		return err
	}
	ss.s.record(strings.Trim(strings.TrimSpace(h.Get("Message-Id")), "<>"))
	return nil
}

type discard struct{}

func (discard) Printf(string, ...any) {}
func (discard) Println(...any)        {}
