package relaytest

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Message is one message a FakeMX accepted.
type Message struct {
	Helo     string
	From     string
	Rcpts    []string
	Body     []byte
	MailOpts smtp.MailOptions
	RcptOpts map[string]smtp.RcptOptions
	TLS      *tls.ConnectionState // nil: received in plaintext
	User     string               // authenticated user ("" = none)
	ConnID   int64                // which connection (1 = first accepted)
	At       time.Time            // when the message was accepted (after DATA)
}

// TLSMode is how a FakeMX offers TLS.
type TLSMode int

// TLS modes.
const (
	TLSOff      TLSMode = iota // no STARTTLS
	TLSStartTLS                // STARTTLS with the configured certificate
	TLSBroken                  // STARTTLS advertised, every handshake fails
	TLSImplicit                // TLS from the first byte (smarthost on 465)
)

type mxConfig struct {
	port                          int
	tlsMode                       TLSMode
	cert                          *tls.Certificate
	hang                          bool
	no8bit, utf8, dsn, requireTLS bool
	user, pass                    string
	maxSize                       int64
	ip                            string // "" = a free 127.0.0.x
}

// Option configures a FakeMX.
type Option func(*mxConfig)

// Port binds the server to port (on a free 127.0.0.x); 0 picks a random port.
func Port(p int) Option { return func(c *mxConfig) { c.port = p } }

// At binds the server to the loopback address ip (with Port: a server
// coming up where ClosedAddr refused connections).
func At(ip string) Option { return func(c *mxConfig) { c.ip = ip } }

// StartTLS offers STARTTLS with cert (nil: a self-signed certificate for "localhost").
func StartTLS(cert *tls.Certificate) Option {
	return func(c *mxConfig) { c.tlsMode, c.cert = TLSStartTLS, cert }
}

// BrokenTLS advertises STARTTLS but fails every handshake.
func BrokenTLS() Option { return func(c *mxConfig) { c.tlsMode = TLSBroken } }

// ImplicitTLS speaks TLS from the first byte with cert (nil: self-signed).
func ImplicitTLS(cert *tls.Certificate) Option {
	return func(c *mxConfig) { c.tlsMode, c.cert = TLSImplicit, cert }
}

// Hang accepts TCP connections and never says anything.
func Hang() Option { return func(c *mxConfig) { c.hang = true } }

// No8BitMIME removes 8BITMIME from the EHLO reply.
func No8BitMIME() Option { return func(c *mxConfig) { c.no8bit = true } }

// SMTPUTF8 advertises SMTPUTF8 (RFC 6531).
func SMTPUTF8() Option { return func(c *mxConfig) { c.utf8 = true } }

// DSN advertises DSN (RFC 3461).
func DSN() Option { return func(c *mxConfig) { c.dsn = true } }

// RequireTLS advertises REQUIRETLS after STARTTLS (RFC 8689).
func RequireTLS() Option { return func(c *mxConfig) { c.requireTLS = true } }

// Auth requires AUTH PLAIN with user and pass before MAIL.
func Auth(user, pass string) Option { return func(c *mxConfig) { c.user, c.pass = user, pass } }

// MaxSize advertises and enforces SIZE n.
func MaxSize(n int64) Option { return func(c *mxConfig) { c.maxSize = n } }

// scripted is a reply given the next `left` times (left < 0: always).
type scripted struct {
	err  *smtp.SMTPError
	left int
}

// MX is a fake mail server on 127.0.0.x. Its recorder and scripted
// replies are safe for concurrent use.
type MX struct {
	IP   string
	Port int
	Addr string // "ip:port"

	cfg    mxConfig
	conns  atomic.Int64
	mu     sync.Mutex
	msgs   []Message
	rcpt   map[string]*scripted
	mail   *scripted
	data   *scripted
	drops  int
	closed []net.Conn
}

// FakeMX starts a fake MX server, stopped at test end.
func FakeMX(t testing.TB, opts ...Option) *MX {
	t.Helper()
	m := &MX{rcpt: map[string]*scripted{}}
	for _, o := range opts {
		o(&m.cfg)
	}
	if m.cfg.cert == nil && m.cfg.tlsMode != TLSOff {
		c := SelfSigned(t, "localhost")
		m.cfg.cert = &c
	}
	var ln net.Listener
	if m.cfg.ip != "" {
		if ip := net.ParseIP(m.cfg.ip); ip == nil || !ip.IsLoopback() {
			t.Fatalf("fake mx: %q is not a loopback address", m.cfg.ip)
		}
		var err error
		if ln, err = net.Listen("tcp", net.JoinHostPort(m.cfg.ip, strconv.Itoa(m.cfg.port))); err != nil {
			t.Fatalf("fake mx: %v", err)
		}
	} else {
		ln = listenLoopback(t, m.cfg.port)
	}
	m.Addr = ln.Addr().String()
	host, port, _ := net.SplitHostPort(m.Addr)
	m.IP = host
	m.Port, _ = strconv.Atoi(port)
	cl := &countingListener{Listener: ln, mx: m}
	if m.cfg.hang {
		go m.hangLoop(cl)
		t.Cleanup(func() { m.closeHung(ln) })
		return m
	}
	s := m.server()
	var l net.Listener = cl
	if m.cfg.tlsMode == TLSImplicit {
		l = tls.NewListener(cl, &tls.Config{Certificates: []tls.Certificate{*m.cfg.cert}})
	}
	go func() { _ = s.Serve(l) }()
	t.Cleanup(func() { _ = s.Close() })
	return m
}

// listenLoopback listens on 127.0.0.x:port, trying addresses from a random
// start until one is free; port 0 picks a random port.
func listenLoopback(t testing.TB, port int) net.Listener {
	t.Helper()
	start := 2 + rand.IntN(250)
	var lastErr error
	for i := 0; i < 250; i++ {
		ip := fmt.Sprintf("127.0.0.%d", 2+(start-2+i)%250)
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
		if err == nil {
			return ln
		}
		lastErr = err
	}
	t.Fatalf("fake mx: no free 127.0.0.x address for port %d: %v", port, lastErr)
	return nil
}

func (m *MX) server() *smtp.Server {
	s := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &session{mx: m, conn: c, id: connID(c)}, nil
	}))
	s.Domain = "mx.test"
	s.AllowInsecureAuth = true // loopback tests only
	s.ReadTimeout = time.Minute
	s.WriteTimeout = time.Minute
	s.MaxRecipients = 1000
	s.MaxMessageBytes = 64 << 20
	if m.cfg.maxSize > 0 {
		s.MaxMessageBytes = m.cfg.maxSize
	}
	s.EnableSMTPUTF8 = m.cfg.utf8
	s.EnableDSN = m.cfg.dsn
	s.EnableREQUIRETLS = m.cfg.requireTLS
	s.ErrorLog = discardLogger{}
	switch m.cfg.tlsMode {
	case TLSStartTLS:
		s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{*m.cfg.cert}}
	case TLSBroken:
		s.TLSConfig = &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return nil, errors.New("fake mx: broken TLS on purpose")
		}}
	}
	return s
}

type discardLogger struct{}

func (discardLogger) Printf(string, ...any) {}
func (discardLogger) Println(...any)        {}

// Connections returns how many TCP connections were accepted.
func (m *MX) Connections() int { return int(m.conns.Load()) }

// Messages returns a copy of the accepted messages.
func (m *MX) Messages() []Message {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Message(nil), m.msgs...)
}

// Received returns how many accepted messages include rcpt.
func (m *MX) Received(rcpt string) int {
	n := 0
	for _, msg := range m.Messages() {
		for _, r := range msg.Rcpts {
			if r == rcpt {
				n++
			}
		}
	}
	return n
}

// ReplyRcpt answers RCPT TO:<rcpt> with err the next times times (times < 0: always).
func (m *MX) ReplyRcpt(rcpt string, err *smtp.SMTPError, times int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rcpt[rcpt] = &scripted{err: err, left: times}
}

// ReplyMail answers MAIL with err the next times times (times < 0: always).
func (m *MX) ReplyMail(err *smtp.SMTPError, times int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.mail = &scripted{err: err, left: times}
}

// ReplyData answers the end of DATA with err the next times times.
func (m *MX) ReplyData(err *smtp.SMTPError, times int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.data = &scripted{err: err, left: times}
}

// DropData closes the connection in the middle of the next n DATA transfers.
func (m *MX) DropData(n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.drops = n
}

// take returns the scripted error of s, counting it down.
func take(s *scripted) *smtp.SMTPError {
	if s == nil || s.left == 0 {
		return nil
	}
	if s.left > 0 {
		s.left--
	}
	return s.err
}

// Err builds an SMTP error reply from "451 4.3.0 text".
func Err(code int, enh string, text string) *smtp.SMTPError {
	var ec smtp.EnhancedCode
	if _, err := fmt.Sscanf(enh, "%d.%d.%d", &ec[0], &ec[1], &ec[2]); err != nil {
		ec = smtp.NoEnhancedCode
	}
	return &smtp.SMTPError{Code: code, EnhancedCode: ec, Message: text}
}

func (m *MX) hangLoop(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		m.mu.Lock()
		m.closed = append(m.closed, c)
		m.mu.Unlock()
	}
}

func (m *MX) closeHung(ln net.Listener) {
	_ = ln.Close()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range m.closed {
		_ = c.Close()
	}
}

// countingListener counts connections and filters 8BITMIME when asked.
type countingListener struct {
	net.Listener
	mx *MX
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	id := l.mx.conns.Add(1)
	return &idConn{Conn: c, id: id, no8bit: l.mx.cfg.no8bit}, nil
}

// idConn tags a connection with its number and hides 8BITMIME from EHLO
// replies (go-smtp's server always advertises it).
type idConn struct {
	net.Conn
	id     int64
	no8bit bool
}

var eightBitLine = []byte("250-8BITMIME\r\n")

func (c *idConn) Write(b []byte) (int, error) {
	if c.no8bit && bytes.Contains(b, eightBitLine) {
		if _, err := c.Conn.Write(bytes.Replace(b, eightBitLine, nil, 1)); err != nil {
			return 0, err
		}
		return len(b), nil
	}
	return c.Conn.Write(b)
}

func connID(c *smtp.Conn) int64 {
	nc := c.Conn()
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	if ic, ok := nc.(*idConn); ok {
		return ic.id
	}
	return 0
}

// session is one SMTP session on a FakeMX.
type session struct {
	mx   *MX
	conn *smtp.Conn
	id   int64
	user string
	msg  Message
}

func (s *session) AuthMechanisms() []string {
	if s.mx.cfg.user == "" {
		return nil
	}
	return []string{sasl.Plain}
}

func (s *session) Auth(mech string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(identity, user, pass string) error {
		if user != s.mx.cfg.user || pass != s.mx.cfg.pass {
			return smtp.ErrAuthFailed
		}
		s.user = user
		return nil
	}), nil
}

func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	if s.mx.cfg.user != "" && s.user == "" {
		return smtp.ErrAuthRequired
	}
	s.mx.mu.Lock()
	err := take(s.mx.mail)
	s.mx.mu.Unlock()
	if err != nil {
		return err
	}
	s.msg = Message{
		Helo: s.conn.Hostname(), From: from, RcptOpts: map[string]smtp.RcptOptions{}, User: s.user, ConnID: s.id,
	}
	if opts != nil {
		s.msg.MailOpts = *opts
	}
	return nil
}

func (s *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	s.mx.mu.Lock()
	err := take(s.mx.rcpt[to])
	s.mx.mu.Unlock()
	if err != nil {
		return err
	}
	s.msg.Rcpts = append(s.msg.Rcpts, to)
	if opts != nil {
		s.msg.RcptOpts[to] = *opts
	}
	return nil
}

func (s *session) Data(r io.Reader) error {
	s.mx.mu.Lock()
	drop := s.mx.drops > 0
	if drop {
		s.mx.drops--
	}
	s.mx.mu.Unlock()
	if drop {
		_, _ = io.ReadFull(r, make([]byte, 8))
		_ = s.conn.Conn().Close()
		return errors.New("dropped on purpose")
	}
	body, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.mx.mu.Lock()
	defer s.mx.mu.Unlock()
	if e := take(s.mx.data); e != nil {
		return e
	}
	s.msg.Body = body
	if st, ok := s.conn.TLSConnectionState(); ok {
		s.msg.TLS = &st
	}
	s.msg.At = time.Now()
	s.mx.msgs = append(s.mx.msgs, s.msg)
	return nil
}

func (s *session) Reset()        { s.msg = Message{} }
func (s *session) Logout() error { return nil }

// ClosedAddr returns a 127.0.0.x address where nothing listens on port:
// connecting to it is refused.
func ClosedAddr(t testing.TB, port int) string {
	t.Helper()
	ln := listenLoopback(t, port)
	host, _, _ := net.SplitHostPort(ln.Addr().String())
	_ = ln.Close()
	return host
}
