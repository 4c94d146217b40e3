package smtpclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Dialer opens TCP connections; *net.Dialer satisfies it.
type Dialer interface {
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
}

// Timeouts are the client timeouts of RFC 5321 §4.5.3.2 (Greeting doubles
// as the TLS handshake timeout; Idle is how long an unused Session may be
// reused).
type Timeouts struct {
	Connect, Greeting, Mail, Rcpt, DataInit, DataBlock, DataFinal, Idle time.Duration
}

// extensions are the EHLO keywords delivery cares about.
type extensions struct {
	eightBit, utf8, dsn, requireTLS, pipelining bool
	size                                        int64
}

// Session is one open SMTP connection to one address of one host, owned
// by one worker and reused for that destination's next entries.
type Session struct {
	c        *smtp.Client
	raw      net.Conn
	host     string // MX or smarthost name
	ip       string
	port     int
	tls      *tls.ConnectionState
	verified bool
	dane     bool        // the host has usable TLSA records (RFC 7672)
	daneFail *TLSFailure // why the DANE check refused the certificate
	ext      extensions
	dirty    bool // a transaction was left open: RSET before the next (RFC 5321 §4.1.1.5)
	broken   bool // the connection's state is unknown (reply lost after the final dot): not reused
	lastUsed time.Time
	sent     int
}

// dialRequest is everything one connection attempt needs.
type dialRequest struct {
	dialer   Dialer
	host     Host
	ip       net.IP
	plan     Plan
	helo     string
	roots    *x509.CertPool
	timeouts Timeouts
	conns    Gauge          // nil: connections not counted
	source   netip.Addr     // local address to bind (zero: the dialer's choice)
	dane     []TLSA         // the host's usable TLSA records (Host.DANE)
	opts     AttemptOptions // Observe for a refused greeting
}

// dial connects, reads the greeting, says EHLO, negotiates TLS per plan
// and authenticates. Under an opportunistic plan a failed STARTTLS or
// handshake is followed at once by a plaintext connection to the same
// address (RFC 7435 §3); the next attempt tries TLS again.
func dial(ctx context.Context, r dialRequest) (*Session, error) {
	s, err := dialOnce(ctx, r)
	if err != nil && r.plan.PlainFallback && r.plan.TLS == "starttls" && isTLSError(err) {
		plain := r
		plain.plan.TLS = "none"
		return dialOnce(ctx, plain)
	}
	return s, err
}

func isTLSError(err error) bool {
	var e *Error
	return errors.As(err, &e) && (e.Reply == replyTLSFailed || e.Enh == "4.7.5")
}

func dialOnce(ctx context.Context, r dialRequest) (*Session, error) {
	addr := net.JoinHostPort(r.ip.String(), strconv.Itoa(r.host.Port))
	cctx, cancel := context.WithTimeout(ctx, r.timeouts.Connect)
	raw, err := DialFrom(cctx, r.dialer, addr, r.source)
	cancel()
	if err != nil {
		if v, ok := transportReply(err); ok && v == replyTimeout {
			return nil, newError(withCause(replyNoAnswer, "connect to "+addr+" timed out"), true, err)
		}
		return nil, err
	}
	if r.conns != nil {
		r.conns.Inc()
		raw = &countedConn{Conn: raw, g: r.conns}
	}
	stop := context.AfterFunc(ctx, func() { _ = raw.Close() })
	defer stop()
	s := &Session{raw: raw, host: r.host.Name, ip: r.ip.String(), port: r.host.Port, dane: len(r.dane) > 0}
	if err := s.open(ctx, r, raw); err != nil {
		_ = raw.Close()
		return nil, err
	}
	s.loadExtensions()
	if r.plan.User != "" {
		s.c.CommandTimeout = r.timeouts.Mail
		if err := s.c.Auth(sasl.NewPlainClient("", r.plan.User, r.plan.Pass)); err != nil {
			s.Close()
			if v := Classify(err); !v.NextHost {
				return nil, newError(withCause(replyAuthFailed, v.Reply.String()), true, err)
			}
			return nil, err
		}
	}
	s.lastUsed = time.Now()
	return s, nil
}

// open runs greeting, EHLO and TLS on dc.
func (s *Session) open(ctx context.Context, r dialRequest, dc net.Conn) error {
	name := r.plan.ServerName
	if name == "" {
		name = r.host.Name
	}
	if name == "" {
		name = r.ip.String()
	}
	cfg := tlsConfig(r.plan, name, r.roots, &s.verified)
	if s.dane {
		cfg = daneConfig(r.dane, daneNames(r.host), &s.verified, &s.daneFail)
	}
	if r.plan.TLS == "implicit" {
		tc, err := handshake(ctx, dc, cfg, r.timeouts.Greeting)
		if err != nil {
			return err
		}
		if err := s.hello(smtp.NewClient(tc), r); err != nil {
			return err
		}
		s.setTLS(r.plan)
		return nil
	}
	if err := s.hello(smtp.NewClient(dc), r); err != nil {
		return err
	}
	if r.plan.TLS == "none" {
		return nil
	}
	if ok, _ := s.c.Extension("STARTTLS"); !ok {
		if s.dane { // RFC 7672 §2.2: TLSA records make TLS mandatory
			f := &TLSFailure{Result: FailSTARTTLS, Reason: "DANE: TLSA records published but STARTTLS not offered"}
			return newError(withCause(replyTLSFailed, f.Reason), true, f)
		}
		if r.plan.RequireTLS {
			return newError(replyTLSMissing, true, nil)
		}
		return nil
	}
	// go-smtp's StartTLS (RFC 3207): STARTTLS, the handshake at once
	// within CommandTimeout, then EHLO again with the same name.
	if err := s.c.StartTLS(cfg); err != nil {
		if s.daneFail != nil {
			return newError(withCause(replyTLSFailed, s.daneFail.Reason), true, s.daneFail)
		}
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			return newError(withCause(replyTLSFailed, "STARTTLS refused: "+strconv.Itoa(se.Code)+" "+se.Message), true, err)
		}
		// A failed handshake (or a connection lost during STARTTLS): under
		// an opportunistic plan the same address is tried in plaintext.
		return newError(withCause(replyTLSFailed, err.Error()), true, err)
	}
	s.setTLS(r.plan)
	return nil
}

func (s *Session) hello(c *smtp.Client, r dialRequest) error {
	s.c = c
	t := r.timeouts
	// Per-phase timeouts of RFC 5321 §4.5.3.2, for the pipelined path
	// (the lock-step path also sets CommandTimeout per command).
	c.Timeouts = smtp.Timeouts{Mail: t.Mail, Rcpt: t.Rcpt, DataInit: t.DataInit, DataBlock: t.DataBlock,
		DataFinal: t.DataFinal}
	c.CommandTimeout = r.timeouts.Greeting
	err := c.Hello(r.helo)
	r.opts.observe(err, true)
	return err
}

func (s *Session) setTLS(plan Plan) {
	st, ok := s.c.TLSConnectionState()
	if !ok {
		return
	}
	s.tls = &st
	if plan.Verify {
		s.verified = true // the handshake checked the certificate
	}
}

func handshake(ctx context.Context, dc net.Conn, cfg *tls.Config, d time.Duration) (*tls.Conn, error) {
	tc := tls.Client(dc, cfg)
	_ = dc.SetDeadline(time.Now().Add(d))
	defer dc.SetDeadline(time.Time{})
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, newError(withCause(replyTLSFailed, err.Error()), true, err)
	}
	return tc, nil
}

// tlsConfig builds the client TLS config. Under verify the handshake itself
// checks the chain and the name; otherwise the certificate is accepted and
// the check only recorded (tls_verified in the delivery log).
func tlsConfig(plan Plan, name string, roots *x509.CertPool, verified *bool) *tls.Config {
	cfg := &tls.Config{ServerName: name, RootCAs: roots, MinVersion: tls.VersionTLS12}
	if net.ParseIP(name) != nil && !plan.Verify {
		cfg.ServerName = ""
	}
	if !plan.Verify {
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			*verified = verifyChain(cs, roots, name) == nil
			return nil
		}
	}
	return cfg
}

func verifyChain(cs tls.ConnectionState, roots *x509.CertPool, name string) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("no certificate")
	}
	return verifyLeaf(cs.PeerCertificates, roots, name)
}

func (s *Session) loadExtensions() {
	has := func(k string) bool { ok, _ := s.c.Extension(k); return ok }
	s.ext = extensions{eightBit: has("8BITMIME"), utf8: has("SMTPUTF8"), dsn: has("DSN"),
		requireTLS: has("REQUIRETLS"), pipelining: has("PIPELINING")}
	if ok, p := s.c.Extension("SIZE"); ok {
		s.ext.size, _ = strconv.ParseInt(strings.TrimSpace(p), 10, 64)
	}
}

// tlsName is the log form of the TLS version ("TLS1.3", "none").
func (s *Session) tlsName() string {
	if s == nil || s.tls == nil {
		return "none"
	}
	return strings.ReplaceAll(tls.VersionName(s.tls.Version), " ", "")
}

func (s *Session) cipher() string {
	if s == nil || s.tls == nil {
		return ""
	}
	return tls.CipherSuiteName(s.tls.CipherSuite)
}

// Quit says QUIT politely (within d) and closes.
func (s *Session) Quit(d time.Duration) {
	s.c.CommandTimeout = d
	if err := s.c.Quit(); err != nil {
		s.Close()
	}
}

// Close closes the connection without QUIT.
func (s *Session) Close() { _ = s.raw.Close() }

// Info describes the connection for the delivery log.
func (s *Session) Info() ConnInfo {
	ci := ConnInfo{MX: s.host, IP: s.ip, Port: s.port, TLS: s.tlsName(), Cipher: s.cipher(),
		Verified: s.verified, DSN: s.ext.dsn}
	if s.dane {
		ci.TLSPolicy = PolicyDANE
	}
	return ci
}

// countedConn decrements the connections gauge on its first Close, so
// every path that closes the connection (QUIT, failures, cancellation,
// the opportunistic plaintext retry) counts it exactly once.
type countedConn struct {
	net.Conn
	g      Gauge
	closed atomic.Bool
}

func (c *countedConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.g.Dec()
	}
	return c.Conn.Close()
}
