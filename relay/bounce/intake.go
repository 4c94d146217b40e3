package bounce

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/jetrelay/jetrelay/relay/events"
)

// Intake limits. go-smtp's zero values mean "unlimited" (STYLE.md pitfall 1).
const (
	intakeMaxRcpts       = 10
	intakeMaxLine        = 2000 // RFC 5321 §4.5.3.1.6 allows 1000; be lenient
	intakeTimeout        = 2 * time.Minute
	intakeMaxConns       = 100
	intakeParseBytes     = 1 << 20 // a DSN's status part comes before any returned message
	intakeSlack          = 1 << 20 // a bounce may carry our whole message plus its report
	intakeHandlerTimeout = 30 * time.Second
)

var (
	errNotOurs = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1},
		Message: "relaying denied: this server accepts only bounces for its own mail"}
	errNoRcpt = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "no valid recipients"}
)

// intake is the running bounce listener.
type intake struct {
	srv *smtp.Server
	ln  net.Listener
}

// StartIntake starts the bounce intake listener on bounces.listen: SMTP
// without AUTH or relaying, accepting RCPT only for VERP addresses this
// process's key minted (550 5.7.1 for anything else). Each accepted bounce
// is parsed (RFC 3464 DSN or plain text), recorded as event=bounced for the
// original message and recipient, and a permanent failure suppresses the
// recipient. It returns once the listener is bound.
func (b *Bouncer) StartIntake() error {
	listen := b.cfg.Bounces.Listen
	if listen == "" {
		return errors.New("bounce: bounces.listen is not set")
	}
	if b.verpDomain == "" {
		return errors.New("bounce: the intake needs bounces.verp_domain")
	}
	if b.intake != nil {
		return errors.New("bounce: intake already started")
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("bounce: bounces.listen %s: %w", listen, err)
	}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &intakeSession{b: b, remote: c.Conn().RemoteAddr().String()}, nil
	}))
	srv.Domain = b.cfg.Hostname
	srv.MaxRecipients = intakeMaxRcpts
	srv.MaxMessageBytes = int64(b.cfg.Submission.MaxMessageBytes) + intakeSlack
	srv.MaxLineLength = intakeMaxLine
	srv.ReadTimeout = intakeTimeout
	srv.WriteTimeout = intakeTimeout
	srv.EnableSMTPUTF8 = true
	srv.ErrorLog = smtpLogger{b}
	b.intake = &intake{srv: srv, ln: ln}
	go func() {
		if err := srv.Serve(&limitListener{Listener: ln, sem: make(chan struct{}, intakeMaxConns)}); err != nil && !errors.Is(err, smtp.ErrServerClosed) {
			b.log.Error().Err(err).Str("event", "bounce_intake").Msg("bounce intake stopped")
		}
	}()
	b.log.Info().Str("event", "bounce_intake").Str("listen", ln.Addr().String()).Str("verp_domain", b.verpDomain).Msg("bounce intake listening")
	return nil
}

// Addr returns the intake's bound address (nil before StartIntake).
func (b *Bouncer) Addr() net.Addr {
	if b.intake == nil {
		return nil
	}
	return b.intake.ln.Addr()
}

// Shutdown stops the intake: no new connections, then waits for sessions
// to end until ctx expires, after which they are closed.
func (b *Bouncer) Shutdown(ctx context.Context) error {
	if b.intake == nil {
		return nil
	}
	err := b.intake.srv.Shutdown(ctx)
	if ctx.Err() != nil {
		_ = b.intake.srv.Close()
	}
	if errors.Is(err, smtp.ErrServerClosed) {
		return nil
	}
	return err
}

// intakeSession is one SMTP session at the intake. Only the VERP
// recipients accepted at RCPT are per-message state.
type intakeSession struct {
	b      *Bouncer
	remote string
	from   string
	rcpts  []string
}

func (s *intakeSession) Reset()        { s.from, s.rcpts = "", nil }
func (s *intakeSession) Logout() error { return nil }

// Mail accepts any reverse-path: bounces come from <> (RFC 5321 §4.5.5)
// but some systems use a postmaster address.
func (s *intakeSession) Mail(from string, _ *smtp.MailOptions) error {
	s.from = from
	return nil
}

// Rcpt accepts only authentic VERP addresses at verp_domain.
func (s *intakeSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if _, _, ok := s.b.verifyVERP(to); !ok {
		s.b.log.Warn().Str("event", "bounce_refused").Str("remote_addr", s.remote).Str("mail_from", s.from).
			Str("rcpt", to).Msg("intake refused a recipient that is not an authentic VERP address")
		return errNotOurs
	}
	s.rcpts = append(s.rcpts, to)
	return nil
}

// Data reads the bounce (parsing at most intakeParseBytes, discarding the
// rest) and records it for each accepted VERP recipient. Internal trouble
// is logged, never returned: the sender could do nothing better with it.
func (s *intakeSession) Data(r io.Reader) error {
	if len(s.rcpts) == 0 {
		return errNoRcpt
	}
	msg, err := io.ReadAll(io.LimitReader(r, intakeParseBytes))
	if err == nil {
		_, err = io.Copy(io.Discard, r)
	}
	if err != nil {
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			return se
		}
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "read error, try again"}
	}
	ctx, cancel := context.WithTimeout(context.Background(), intakeHandlerTimeout)
	defer cancel()
	for _, to := range s.rcpts {
		s.b.handleBounce(ctx, s.remote, to, msg)
	}
	return nil
}

// handleBounce matches one bounce to the message and recipient its VERP
// address stands for, records event=bounced and suppresses permanent
// failures.
func (b *Bouncer) handleBounce(ctx context.Context, remote, verpAddr string, msg []byte) {
	qid, rcpt, _ := b.ParseVERP(ctx, verpAddr)
	_, h, _ := b.verifyVERP(verpAddr)
	bounce, ok := ParseBounce(msg)
	ignored := b.log.Info().Str("event", "bounce_ignored").Str("queue_id", qid).Str("remote_addr", remote)
	if !ok {
		ignored.Msg("message at the bounce intake reports no delivery status")
		return
	}
	r, ok := matchBounce(bounce, rcpt, h)
	if !ok {
		ignored.Str("rcpt", rcpt).Msg("bounce names no recipient of this message")
		return
	}
	if r.Action != ActionFailed {
		ignored.Str("rcpt", r.Addr).Str("status", r.Action).Msg("delivery report is not a failure")
		return
	}
	if rcpt == "" {
		rcpt = NormalizeAddr(r.Addr)
	}
	b.emit(&events.Event{Event: events.Bounced, QueueID: qid, Rcpt: rcpt, RemoteAddr: remote, MX: r.RemoteMTA,
		Status: events.StatusFailed, SMTPEnh: r.Status, Reply: r.Diagnostic})
	if r.Permanent() && b.cfg.Bounces.SuppressEnabled() {
		_, err := b.supp.Add(ctx, Suppression{Addr: rcpt, Reason: r.Diagnostic, Code: r.Status, QueueID: qid}, ActorIntake)
		if err != nil {
			b.log.Error().Err(err).Str("queue_id", qid).Str("rcpt", rcpt).Msg("could not suppress recipient")
		}
	}
}

// matchBounce picks the reported recipient for the VERP recipient rcpt
// (hash h when the record is gone). A DSN at a VERP address concerns that
// recipient whatever it names (a forwarder may report its own target), so
// with a single failed DSN recipient it is taken; plain text must name it.
func matchBounce(bn Bounce, rcpt string, h []byte) (BouncedRcpt, bool) {
	for _, r := range bn.Rcpts {
		if rcpt != "" && (NormalizeAddr(r.Addr) == rcpt || NormalizeAddr(r.Original) == rcpt) {
			return r, true
		}
		if rcpt == "" && (hashIs(r.Addr, h) || hashIs(r.Original, h)) {
			return r, true
		}
	}
	if bn.DSN && rcpt != "" && len(bn.Rcpts) == 1 {
		return bn.Rcpts[0], true
	}
	return BouncedRcpt{}, false
}

func hashIs(addr string, h []byte) bool {
	return addr != "" && string(rcptHash(addr)) == string(h)
}

// smtpLogger routes go-smtp's internal errors to the logger.
type smtpLogger struct{ b *Bouncer }

func (l smtpLogger) Printf(format string, v ...any) {
	l.b.log.Warn().Str("event", "bounce_intake").Msgf(format, v...)
}

func (l smtpLogger) Println(v ...any) {
	l.b.log.Warn().Str("event", "bounce_intake").Msg(fmt.Sprint(v...))
}

// limitListener caps concurrent intake connections.
type limitListener struct {
	net.Listener
	sem chan struct{}
}

func (l *limitListener) Accept() (net.Conn, error) {
	l.sem <- struct{}{}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}
