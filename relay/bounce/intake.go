package bounce

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"

	"time"

	"github.com/emersion/go-smtp"
	"github.com/nats-io/nats.go/jetstream"
)

// Intake limits. go-smtp's zero values mean "unlimited" (STYLE.md pitfall
// 1). Connection counts, idle time and session length come from
// bounces.intake.
const (
	intakeMaxRcpts       = 10
	intakeMaxLine        = 2000 // RFC 5321 §4.5.3.1.6 allows 1000; be lenient
	intakeCmdTimeout     = 2 * time.Minute
	intakeParseBytes     = 1 << 20 // a DSN's status part comes before any returned message
	intakeSlack          = 1 << 20 // a bounce may carry our whole message plus its report
	intakeHandlerTimeout = 30 * time.Second
)

// Intake replies (RFC 5321 §4.2.2, RFC 3463), the intake's catalogue.
var (
	errNotOurs = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1},
		Message: "relaying denied: this server accepts only bounces for its own mail"}
	errExpired = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1},
		Message: "this bounce address has expired"}
	errNoRcpt   = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "no valid recipients"}
	errReadBody = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "read error, try again"}
	errLookup   = &smtp.SMTPError{
		Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "temporary lookup failure, try again",
	}
	// errNotReport: a message at bounces.fbl_address that is not an ARF
	// report (RFC 5965 §2). Refused at DATA rather than dropped: the
	// sender learns at once, and no bounce of ours goes anywhere.
	errNotReport = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 6, 0},
		Message: "this address accepts only ARF feedback reports (RFC 5965 multipart/report; report-type=feedback-report)"}
)

// errMalformedReport is the reply to an ARF report that cannot be read.
func errMalformedReport(e *arfError) *smtp.SMTPError {
	return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 6, 0},
		Message: "malformed ARF feedback report: " + e.reason}
}

// Connection refusals are written before go-smtp sees the connection.
const (
	replyTooManyFromIP = "421 4.7.0 too many connections from your address, try again later"
	replyTooMany       = "421 4.7.0 too many connections, try again later"
)

// intake is the running bounce listener.
type intake struct {
	srv *smtp.Server
	ln  net.Listener
}

// StartIntake starts the bounce intake listener on bounces.listen: SMTP
// without AUTH or relaying, accepting RCPT only for unexpired VERP
// addresses this process's key minted and bounces.fbl_address (550 5.7.1
// for anything else, 550 5.1.1 for expired tokens), from any sender,
// within the bounces.intake connection, idle and session limits
// (intake_conn.go). An ARF feedback report (RFC 5965) is a complaint
// (complaint.go): event=complaint, and abuse suppresses; a malformed one
// gets 550 5.6.0 naming the problem, as does anything but a report at
// fbl_address. Other mail to a VERP address is parsed as a bounce (RFC
// 3464 DSN or plain text), recorded as event=bounced for the original
// message and recipient, and suppresses only what ShouldSuppress allows.
// Messages over the submission limit plus intakeSlack get go-smtp's
// 552 5.3.4. It returns once the listener is bound.
func (b *Bouncer) StartIntake() error {
	set := b.state().set
	listen := set.Listen
	if listen == "" {
		return errors.New("bounce: bounces.listen is not set")
	}
	if set.VERPDomain == "" {
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
		ic, _ := c.Conn().(*intakeConn)
		return &intakeSession{b: b, conn: ic, remote: c.Conn().RemoteAddr().String()}, nil
	}))
	srv.Domain = set.Hostname
	srv.MaxRecipients = intakeMaxRcpts
	srv.MaxMessageBytes = set.MaxMessageBytes + intakeSlack
	srv.MaxLineLength = intakeMaxLine
	srv.ReadTimeout = intakeCmdTimeout // further cut by bounces.intake.idle and .session
	srv.WriteTimeout = intakeCmdTimeout
	srv.EnableSMTPUTF8 = true
	srv.ErrorLog = smtpLogger{b}
	srv.Rejected = b.logProtocolRefusal
	b.intake = &intake{srv: srv, ln: ln}
	go func() {
		if err := srv.Serve(b.newIntakeListener(ln)); err != nil && !errors.Is(err, smtp.ErrServerClosed) {
			b.log.Error().Err(err).Str("event", "bounce_intake").Msg("bounce intake stopped")
		}
	}()
	b.log.Info().Str("event", "bounce_intake").Str("listen", ln.Addr().String()).Str("verp_domain", set.VERPDomain).
		Str("fbl_address", set.FBLAddress).Msg("bounce intake listening")
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
// recipients accepted at RCPT and whether fbl_address was one are
// per-message state.
type intakeSession struct {
	b      *Bouncer
	conn   *intakeConn // nil only if the listener was bypassed
	remote string
	from   string
	rcpts  []string
	fbl    bool
}

func (s *intakeSession) Reset()        { s.from, s.rcpts, s.fbl = "", nil, false }
func (s *intakeSession) Logout() error { return nil }

// progress marks a transaction step: the idle clock restarts.
func (s *intakeSession) progress() {
	if s.conn != nil {
		s.conn.progress()
	}
}

// Mail accepts any reverse-path: bounces come from <> (RFC 5321 §4.5.5)
// but some systems use a postmaster address.
func (s *intakeSession) Mail(from string, _ *smtp.MailOptions) error {
	s.from = from
	s.progress()
	return nil
}

// Rcpt accepts only authentic, unexpired VERP addresses at verp_domain
// and bounces.fbl_address.
func (s *intakeSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if fbl := s.b.state().set.FBLAddress; fbl != "" && NormalizeAddr(to) == NormalizeAddr(fbl) {
		s.fbl = true
		s.progress()
		return nil
	}
	if err := s.b.checkVERP(to); err != nil {
		s.b.log.Warn().Str("event", "bounce_refused").Str("remote_addr", s.remote).Str("mail_from", s.from).
			Str("rcpt", to).Int("smtp_code", err.Code).Str("smtp_enh", enhString(err.EnhancedCode)).
			Msg("intake refused a recipient: " + err.Message)
		return err
	}
	s.rcpts = append(s.rcpts, to)
	s.progress()
	return nil
}

// checkVERP is RCPT's verdict on a VERP address: nil, 550 5.7.1 (not
// ours), 550 5.1.1 (expired) or 451 4.3.0 (the record lookup a legacy
// token needs failed).
func (b *Bouncer) checkVERP(addr string) *smtp.SMTPError {
	t, ok := b.verifyVERP(addr)
	switch {
	case !ok:
		return errNotOurs
	case b.expired(t):
		return errExpired
	case !t.legacy():
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), kvTimeout)
	defer cancel()
	_, err := b.kv.Get(ctx, verpRecordKey(t.qid, t.h))
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return errExpired
	case err != nil:
		return errLookup
	}
	return nil
}

// Data reads the bounce (parsing at most intakeParseBytes, discarding the
// rest) and records it for each accepted VERP recipient. Internal trouble
// is logged, never returned: the sender could do nothing better with it.
// The body may take until the session cap, not only the idle time.
func (s *intakeSession) Data(r io.Reader) error {
	if len(s.rcpts) == 0 && !s.fbl {
		return errNoRcpt
	}
	if s.conn != nil {
		s.conn.dataPhase()
		defer s.conn.progress()
	}
	msg, err := io.ReadAll(io.LimitReader(r, intakeParseBytes))
	if err == nil {
		_, err = io.Copy(io.Discard, r)
	}
	if err != nil {
		se := errReadBody
		errors.As(err, &se)
		s.b.log.Warn().Err(err).Str("event", "bounce_refused").Str("remote_addr", s.remote).
			Int("smtp_code", se.Code).Str("smtp_enh", enhString(se.EnhancedCode)).Msg("intake refused a message body")
		return se
	}
	rep, err := ParseARF(msg)
	var bad *arfError
	switch {
	case errors.As(err, &bad):
		return s.refuse(errMalformedReport(bad), "intake refused a malformed feedback report")
	case err != nil && s.fbl:
		return s.refuse(errNotReport, "intake refused a message at the feedback-loop address")
	}
	ctx, cancel := context.WithTimeout(context.Background(), intakeHandlerTimeout)
	defer cancel()
	if rep != nil {
		s.b.handleReport(ctx, s.remote, s.rcpts, s.fbl, rep)
		return nil
	}
	for _, to := range s.rcpts {
		s.b.handleBounce(ctx, s.remote, to, msg)
	}
	return nil
}

// refuse logs a refused message and returns its reply.
func (s *intakeSession) refuse(se *smtp.SMTPError, msg string) error {
	s.b.log.Warn().Str("event", "bounce_refused").Str("remote_addr", s.remote).Str("mail_from", s.from).
		Int("smtp_code", se.Code).Str("smtp_enh", enhString(se.EnhancedCode)).Str("reply", se.Message).Msg(msg)
	return se
}

// logProtocolRefusal logs the refusals go-smtp makes itself (bad
// commands, over-long lines, size limit, the idle and session cut-off's
// "421 4.4.2"); the session's own refusals are logged where they are made.
func (b *Bouncer) logProtocolRefusal(c *smtp.Conn, code int, enh smtp.EnhancedCode, text string) {
	b.log.Warn().Str("event", "bounce_refused").Str("remote_addr", c.Conn().RemoteAddr().String()).
		Int("smtp_code", code).Str("smtp_enh", enhString(enh)).Str("reply", text).Msg("intake refused a command")
}

func enhString(c smtp.EnhancedCode) string {
	return fmt.Sprintf("%d.%d.%d", c[0], c[1], c[2])
}

// smtpLogger routes go-smtp's internal errors to the logger.
type smtpLogger struct{ b *Bouncer }

func (l smtpLogger) Printf(format string, v ...any) {
	l.b.log.Warn().Str("event", "bounce_intake").Msgf(format, v...)
}

func (l smtpLogger) Println(v ...any) {
	l.b.log.Warn().Str("event", "bounce_intake").Msg(fmt.Sprint(v...))
}
