package submit

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/rs/zerolog"
)

// backend is the go-smtp Backend shared by every listener.
type backend struct{ srv *Server }

// NewSession starts a session at EHLO/HELO (and again after STARTTLS). A
// bad EHLO argument is refused here with 501 5.5.4 (RFC 5321 §4.1.1.1).
func (b *backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	s := &session{srv: b.srv, conn: c, remote: c.Conn().RemoteAddr().String()}
	s.tc = findTracked(c.Conn())
	if s.tc == nil { // not from our listener: refuse rather than run unlimited
		return nil, internalReply("noconn")
	}
	s.id, s.ip, s.key = s.tc.id, s.tc.ip, s.tc.key
	s.log = b.srv.log.With().Str("conn_id", s.id).Str("remote_addr", s.remote).Logger()
	if st, ok := c.TLSConnectionState(); ok {
		s.tlsState = &st
	}
	if !validHelo(c.Hostname()) {
		return nil, s.reply("EHLO", errBadHelo, rejectInfo{})
	}
	return s, nil
}

func findTracked(c net.Conn) *trackedConn {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	t, _ := c.(*trackedConn)
	return t
}

// session is one client connection's state. Per-connection fields are set
// at NewSession and AUTH; the transaction lives in tx, replaced (never
// mutated by Reset) so that a BDAT Data goroutine keeps a consistent view.
type session struct {
	srv      *Server
	conn     *smtp.Conn
	tc       *trackedConn
	id       string
	remote   string
	ip, key  string
	log      zerolog.Logger
	tlsState *tls.ConnectionState
	user     string // authenticated user ("" before AUTH)
	errSeq   atomic.Int64

	mu sync.Mutex
	tx *txn
}

// txn is one mail transaction (RFC 5321 §3.3).
type txn struct {
	from     string // "" = null reverse-path
	helo     string
	utf8     bool
	body8Bit bool
	requireT bool
	ret      string
	envID    string
	rcpts    []queue.Recipient
	seen     map[string]bool
	started  time.Time
	size     int64 // SIZE= at MAIL (RFC 1870), 0 if none
}

// rejectInfo adds context to a rejection's log line.
type rejectInfo struct {
	rcpt     string
	mailFrom *string
	ip       bool
	user     string // the user name tried at AUTH (never the password)
}

// reply is the session's one error boundary (STYLE.md): an *smtp.SMTPError
// passes (a 2xx one is DATA's success reply; 4xx/5xx ones are logged as
// event=rejected), a deadline becomes
// 451 4.4.5, anything else 451 4.3.0 with an id, and the full error goes to
// the log only.
func (s *session) reply(op string, err error, info rejectInfo) error {
	if err == nil {
		return nil
	}
	var se *smtp.SMTPError
	switch {
	case errors.As(err, &se):
	case errors.Is(err, context.DeadlineExceeded):
		s.log.Error().Err(err).Str("event", "store_timeout").Str("op", op).Str("user", s.user).Msg("deadline exceeded")
		se = errDeadline
	default:
		id := s.id + "-" + itoa(int(s.errSeq.Add(1)))
		s.log.Error().Err(err).Str("event", "internal_error").Str("op", op).Str("error_id", id).Str("user", s.user).
			Msg("internal error")
		se = internalReply(id)
	}
	if se.Code >= 400 && s.tc.refusal.rejected(se.Code, se.EnhancedCode) {
		s.log.Debug().Str("conn_id", s.id).Int("smtp_code", se.Code).Str("reason", op+": "+se.Message).
			Msg("follows a refused MAIL or RCPT; not a new rejection")
	} else if se.Code >= 400 {
		e := &events.Event{Event: events.Rejected, ConnID: s.id, RemoteAddr: s.remote, User: s.user,
			Rcpt: info.rcpt, MailFrom: info.mailFrom, SMTPCode: se.Code, SMTPEnh: enh(se), Reason: op + ": " + se.Message}
		if info.ip {
			e.IP = s.ip
		}
		if e.User == "" {
			e.User = info.user
		}
		s.srv.emit(e)
	}
	return se
}

// Mail starts a transaction: authenticated user, EHLO still valid, sender
// syntax and policy, then the user's rate (a refused sender costs no token).
func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	tx, err := s.mail(from, opts)
	if err != nil {
		return s.reply("MAIL", err, rejectInfo{mailFrom: events.Str(from)})
	}
	s.mu.Lock()
	s.tx = tx
	s.mu.Unlock()
	s.tc.beginTx()
	return nil
}

func (s *session) mail(from string, opts *smtp.MailOptions) (*txn, error) {
	if s.user == "" {
		return nil, errAuthRequired
	}
	helo := s.conn.Hostname()
	if !validHelo(helo) { // a later EHLO is not seen by NewSession
		return nil, errBadHelo
	}
	u := s.srv.policy().user(s.user)
	if u == nil {
		return nil, errUserGone
	}
	if err := s.pausedErr(); err != nil { // the bounce-rate guard (paused.go)
		return nil, err
	}
	tx := &txn{helo: helo, utf8: opts.UTF8, body8Bit: opts.Body == smtp.Body8BitMIME, requireT: opts.RequireTLS,
		ret: string(opts.Return), envID: opts.EnvelopeID, seen: map[string]bool{}, started: time.Now()}
	if from == "" {
		if !u.anyFrom {
			return nil, errNullSender
		}
	} else {
		mb, err := parseMailbox(from, opts.UTF8)
		switch {
		case errors.Is(err, errAddr8Bit):
			return nil, errNeedUTF8
		case err != nil:
			return nil, errBadSender
		case !u.allows(mb.String()):
			return nil, errSenderDenied
		}
		tx.from = mb.String()
	}
	if !s.srv.inflight.fits(opts.Size) { // RFC 5321 §4.3.2 / RFC 1870 §6.1: 452 4.3.1
		return nil, errInflight
	}
	tx.size = opts.Size
	if u.limiter != nil && !u.limiter.Allow() {
		return nil, errRate
	}
	return tx, nil
}

// Rcpt adds a recipient: syntax (RFC 5321 §4.1.2, §2.3.5 fully-qualified
// domains), the recipient limit, DSN parameters (RFC 3461 §4) and the
// suppression list.
func (s *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	s.mu.Lock()
	tx := s.tx
	s.mu.Unlock()
	info := rejectInfo{rcpt: to}
	if tx == nil {
		return s.reply("RCPT", errNoTxn, info)
	}
	info.mailFrom = events.Str(tx.from)
	r, err := s.rcpt(tx, to, opts)
	if err != nil {
		return s.reply("RCPT", err, info)
	}
	if key := strings.ToLower(r.Addr); !tx.seen[key] {
		tx.seen[key] = true
		tx.rcpts = append(tx.rcpts, r)
	}
	return nil
}

func (s *session) rcpt(tx *txn, to string, opts *smtp.RcptOptions) (queue.Recipient, error) {
	mb, err := parseMailbox(to, tx.utf8)
	switch {
	case errors.Is(err, errAddr8Bit):
		return queue.Recipient{}, errNeedUTF8
	case err != nil:
		return queue.Recipient{}, errBadRcpt
	case mb.Literal:
		return queue.Recipient{}, errRcptLiteral
	case !strings.Contains(mb.Domain, ".") || !queue.ValidDomain(mb.Domain):
		return queue.Recipient{}, errBadRcpt
	}
	r := queue.Recipient{Addr: mb.String()}
	for _, n := range opts.Notify {
		r.Notify = append(r.Notify, string(n))
	}
	if opts.OriginalRecipient != "" {
		if strings.ContainsFunc(opts.OriginalRecipient, func(c rune) bool { return c < 0x20 || c == 0x7f }) {
			return queue.Recipient{}, errBadORCPT
		}
		r.ORCPT = strings.ToLower(string(opts.OriginalRecipientType)) + ";" + opts.OriginalRecipient
	}
	if s.srv.suppress != nil {
		if since, ok := s.suppressed(r.Addr); ok { // fails open (policyread.go)
			return queue.Recipient{}, suppressedReply(since)
		}
	}
	return r, nil
}

// Reset ends the transaction (RSET, a new EHLO, after DATA, STARTTLS).
func (s *session) Reset() {
	s.mu.Lock()
	s.tx = nil
	s.mu.Unlock()
	s.tc.endTx()
	s.tc.refusal.reset()
}

// Logout ends the session.
func (s *session) Logout() error {
	s.Reset()
	return nil
}
