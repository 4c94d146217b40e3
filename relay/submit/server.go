package submit

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/rs/zerolog"
)

// Enqueuer stores a message durably; *queue.Queue implements it. Enqueue
// returns nil only when every part of m is acknowledged by the store, and on
// error leaves nothing of m deliverable. m.Body is submission's read buffer,
// reused once Enqueue returns: an implementation must not keep it (the
// NATS client copies what it publishes).
type Enqueuer interface {
	Enqueue(ctx context.Context, m *queue.Message) error
}

// Signer DKIM-signs at submission (implemented by package dkim). Sign
// returns the DKIM-Signature header field(s) to prepend, CRLF-terminated,
// and a short result for the accept log line ("none" when no key covers the
// From domain, else e.g. "example.com:s1"). An error refuses the message
// with 451 4.3.0: jetrelay never queues mail it was meant to sign unsigned.
type Signer interface {
	Sign(msg []byte) (sigs []byte, result string, err error)
}

// Suppressor is the suppression list (implemented by relay/bounce).
// Suppressed reports whether addr is suppressed and since when, within
// ctx; an error or a timeout lets the recipient through (policyread.go).
type Suppressor interface {
	Suppressed(ctx context.Context, addr string) (since time.Time, ok bool, err error)
}

// Observer receives the timings and gauges that events do not carry
// (relay/admin's Metrics implements it). Methods must be cheap and safe for
// concurrent use.
type Observer interface {
	ObserveDKIMSign(d time.Duration)
	ObservePublish(d time.Duration)
}

// Gauge counts open inbound connections (a prometheus.Gauge fits).
type Gauge interface {
	Inc()
	Dec()
}

// Settings are what the submission server reads from the configuration:
// its own section plus the values it needs from elsewhere, named. cmd
// builds them; Prepare swaps them on reload.
type Settings struct {
	// Hostname names this server in the greeting, EHLO and Received.
	Hostname string
	// DataDir holds the generated certificate (LoadOrCreateTLS).
	DataDir string
	// Submission is the submission section. Listeners, tls and the
	// go-smtp limits (max_message_bytes, max_recipients, max_line_length,
	// max_inflight_bytes, timeouts.idle) are read once, at New.
	Submission config.Submission
}

// Options are the submission server's dependencies. Signer, Suppressor,
// Observer and Conns may be nil; everything else is required.
type Options struct {
	Settings   Settings
	Queue      Enqueuer
	Signer     Signer
	Suppressor Suppressor
	Events     *events.Emitter
	Logger     zerolog.Logger
	// TLS is the listeners' TLS configuration, kept as given; nil:
	// LoadOrCreateTLS(Settings), loaded again by every Prepare so that a
	// renewed certificate is taken on reload. AUTH is only accepted
	// inside TLS.
	TLS      *tls.Config
	Observer Observer
	Conns    Gauge
	// Brake is the auth brake in JetStream KV (OpenBrake); required.
	Brake *Brake
	// Rates limits submission.users[].rate cluster-wide (OpenRates); nil
	// limits per process only.
	Rates *Rates
}

// signerBox lets SetSigner swap the signer while sessions sign.
type signerBox struct{ s Signer }

// nopObserver is used when Options.Observer is nil.
type nopObserver struct{}

func (nopObserver) ObserveDKIMSign(time.Duration) {}
func (nopObserver) ObservePublish(time.Duration)  {}

// nopGauge is used when Options.Conns is nil.
type nopGauge struct{}

func (nopGauge) Inc() {}
func (nopGauge) Dec() {}

const (
	// storeTimeout bounds enqueueing one message: with the queue's own
	// publish budget (8 s) inside it, the client has its reply to DATA
	// within 10 s of the end of the data, stored or 451 (issue 15); a
	// message over 1 MiB gets queue.PublishAllowance more.
	storeTimeout = 9 * time.Second
	// maxWriteTimeout bounds writing one reply.
	maxWriteTimeout = 2 * time.Minute
	// maxRefusing bounds goroutines busy telling refused clients why.
	maxRefusing = 64
	// admitBanTimeout bounds the ban check of a new connection.
	admitBanTimeout = time.Second
	// brakeTimeout bounds each piece of the auth brake's bucket work for
	// one AUTH (check, count); past it the brake fails open to the node's
	// own counts, so a slow bucket never stalls AUTH for long.
	brakeTimeout = 2 * time.Second
)

// Server is the submission service: one go-smtp server per listener.
type Server struct {
	static    Settings // listeners and go-smtp limits, fixed at New
	hostname  string
	queue     Enqueuer
	signer    atomic.Pointer[signerBox]
	observe   Observer
	connGauge Gauge
	suppress  Suppressor
	readFails readFailures // policy reads that failed open (policyread.go)
	events    *events.Emitter
	log       zerolog.Logger
	tlsConf   *tls.Config                // hands out tlsCur (tlsconf.go)
	tlsCur    atomic.Pointer[tls.Config] // the certificate in force
	tlsOwned  bool                       // tlsCur comes from Settings: Prepare reloads it
	pol       atomic.Pointer[policy]
	brake     *Brake
	rates     *Rates
	inflight  *inflight // message data held in memory, this process (spool.go)
	conns     *connTracker
	bcryptSem chan struct{}
	refusing  chan struct{}
	// proxyTimeout bounds reading a PROXY header; 0 = 5 s (tests shorten it).
	proxyTimeout time.Duration

	// pauses is the bounce-rate guard's check at MAIL (paused.go).
	pauses atomic.Pointer[pausesBox]

	mu        sync.Mutex
	servers   []*smtp.Server
	listeners []net.Listener
	started   bool
	serving   sync.WaitGroup
	bg        sync.WaitGroup
}

// New checks the options and parses the user policy; it binds nothing.
func New(o Options) (*Server, error) {
	switch {
	case o.Queue == nil:
		return nil, errors.New("submit: Options.Queue is required")
	case o.Events == nil:
		return nil, errors.New("submit: Options.Events is required")
	case o.Brake == nil:
		return nil, errors.New("submit: Options.Brake is required (OpenBrake)")
	}
	rates := o.Rates
	if rates == nil {
		rates, _ = OpenRates(context.Background(), RateOptions{Logger: o.Logger}) // local only: cannot fail
	}
	pol, err := newPolicy(o.Settings.Submission, nil, rates)
	if err != nil {
		return nil, err
	}
	s := &Server{
		static: o.Settings, hostname: o.Settings.Hostname, queue: o.Queue, suppress: o.Suppressor,
		observe: o.Observer, connGauge: o.Conns,
		events: o.Events, log: o.Logger, brake: o.Brake, rates: rates, conns: newConnTracker(),
		bcryptSem: make(chan struct{}, max(2, 2*runtime.GOMAXPROCS(0))),
		refusing:  make(chan struct{}, maxRefusing),
		inflight:  &inflight{max: int64(o.Settings.Submission.MaxInflightBytes)},
	}
	if err := s.initTLS(o.TLS, o.Settings); err != nil {
		return nil, err
	}
	if s.observe == nil {
		s.observe = nopObserver{}
	}
	if s.connGauge == nil {
		s.connGauge = nopGauge{}
	}
	s.pol.Store(pol)
	s.SetSigner(o.Signer)
	return s, nil
}

// SetSigner replaces the DKIM signer (nil: sign nothing); messages in DATA
// at that moment finish with the signer they started with. Used on reload.
func (s *Server) SetSigner(sg Signer) { s.signer.Store(&signerBox{s: sg}) }

func (s *Server) policy() *policy { return s.pol.Load() }

// Prepare is the first half of a reload: it parses s's users, networks
// and limits without changing anything; apply, which cannot fail, swaps
// them in at once. Connections keep running and see the new policy at
// their next command. What New read once (listeners, tls, the go-smtp
// limits; config.Restart) is not changed: the caller keeps those
// (config.KeepRestart) and reports them. Without Options.TLS it also loads
// submission.tls again (a renewed certificate); handshakes after apply use
// it.
func (s *Server) Prepare(set Settings) (apply func(), err error) {
	pol, err := newPolicy(set.Submission, s.policy(), s.rates)
	if err != nil {
		return nil, err
	}
	tlsConf := s.tlsCur.Load()
	if s.tlsOwned {
		if tlsConf, err = LoadOrCreateTLS(set); err != nil {
			return nil, err
		}
	}
	return func() {
		s.pol.Store(pol)
		s.tlsCur.Store(tlsConf)
	}, nil
}

// Start binds every submission.listeners entry, in order, and serves each
// in its own goroutine. If one address cannot be bound, none stays bound and
// the error names the address and what to do.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return errors.New("submit: already started")
	}
	from, err := s.proxyFrom()
	if err != nil {
		return err
	}
	var bound []net.Listener
	for _, l := range s.static.Submission.Listeners {
		ln, err := net.Listen("tcp", l.Addr)
		if err != nil {
			for _, b := range bound {
				_ = b.Close()
			}
			return bindError(l.Addr, err)
		}
		bound = append(bound, &listener{Listener: s.wrapProxy(ln, l, from), srv: s, implicit: l.TLS == "implicit"})
	}
	s.started = true
	for _, ln := range bound {
		srv := s.newSMTPServer()
		s.servers = append(s.servers, srv)
		s.listeners = append(s.listeners, ln)
		s.serving.Add(1)
		go func() {
			defer s.serving.Done()
			if err := srv.Serve(ln); err != nil && !errors.Is(err, net.ErrClosed) {
				s.log.Error().Err(err).Str("event", "listener_stopped").Str("addr", ln.Addr().String()).
					Msg("submission listener stopped")
			}
		}()
	}
	return nil
}

// bindError explains a failed bind in one line.
func bindError(addr string, err error) error {
	_, portStr, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(portStr)
	switch {
	case (errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM)) && port > 0 && port < 1024:
		return fmt.Errorf("submission listener %s: permission denied: ports below 1024 need root, or "+
			"CAP_NET_BIND_SERVICE (sudo setcap cap_net_bind_service=+ep /path/to/jetrelay), "+
			"or use ports >= 1024 in submission.listeners", addr)
	case errors.Is(err, syscall.EADDRINUSE):
		return fmt.Errorf("submission listener %s: address already in use: "+
			"stop the other process or choose another port in submission.listeners", addr)
	}
	return fmt.Errorf("submission listener %s: %w", addr, err)
}

func (s *Server) newSMTPServer() *smtp.Server {
	sub := s.static.Submission
	srv := smtp.NewServer(&backend{srv: s})
	srv.Domain = s.hostname
	srv.TLSConfig = s.tlsConf
	srv.AllowInsecureAuth = false
	srv.MaxMessageBytes = int64(sub.MaxMessageBytes)
	srv.MaxRecipients = sub.MaxRecipients // 452 4.5.3, advertised as LIMITS RCPTMAX (RFC 9422)
	srv.MaxLineLength = sub.MaxLineLength
	srv.ReadTimeout = min(sub.Timeouts.Idle.D(), sub.Timeouts.PreAuth.Idle.D()) // implicit TLS handshake
	srv.ReadTimeoutFunc = s.readTimeout
	srv.ReadTimeoutReply = s.timeoutReply
	srv.CommandHook = s.commandHook
	srv.TLSHandshakeFailed = s.handshakeFailed
	srv.WriteTimeout = min(sub.Timeouts.Idle.D(), maxWriteTimeout)
	srv.EnableSMTPUTF8 = true
	srv.EnableREQUIRETLS = true
	srv.EnableDSN = true
	srv.EnableBINARYMIME = false // bodies are line-normalised; binary would be corrupted
	srv.ErrorLog = smtpLogger{log: s.log}
	srv.Rejected = s.protocolRejected
	return srv
}

// protocolRejected logs a refusal go-smtp chose itself (syntax, sequence,
// SIZE over the limit at MAIL, an oversized BDAT chunk, too many
// recipients) as an event=rejected line, like the session's own refusals.
// A sequence error that only follows a refused MAIL or RCPT is logged at
// debug level instead (followon.go).
func (s *Server) protocolRejected(c *smtp.Conn, code int, ec smtp.EnhancedCode, text string) {
	e := &events.Event{Event: events.Rejected, RemoteAddr: c.Conn().RemoteAddr().String(),
		SMTPCode: code, SMTPEnh: enh(&smtp.SMTPError{Code: code, EnhancedCode: ec}), Reason: "smtp: " + text}
	if tc := findTracked(c.Conn()); tc != nil {
		if tc.refusal.rejected(code, ec) {
			s.log.Debug().Str("conn_id", tc.id).Int("smtp_code", code).Str("reason", "smtp: "+text).
				Msg("follows a refused MAIL or RCPT; not a new rejection")
			return
		}
		e.ConnID = tc.id
	}
	if ss, ok := c.Session().(*session); ok {
		e.User = ss.user
	}
	s.emit(e)
}

// Addrs returns the bound addresses in listener order (after Start).
func (s *Server) Addrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]net.Addr, len(s.listeners))
	for i, l := range s.listeners {
		out[i] = l.Addr()
	}
	return out
}

// Shutdown stops accepting, lets transfers in progress finish, ends idle
// sessions, and waits until every connection is gone or ctx ends; then it
// closes whatever is left.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	servers, listeners := s.servers, s.listeners
	s.mu.Unlock()
	for _, l := range listeners {
		_ = l.Close()
	}
	s.conns.drainAll()
	errs := make(chan error, len(servers))
	for _, srv := range servers {
		go func() { errs <- srv.Shutdown(ctx) }()
	}
	var err error
	for range servers {
		if e := <-errs; e != nil && !errors.Is(e, net.ErrClosed) && !errors.Is(e, smtp.ErrServerClosed) {
			err = e
		}
	}
	if err != nil {
		for _, srv := range servers {
			_ = srv.Close()
		}
	}
	s.serving.Wait()
	s.bg.Wait()
	return err
}

// emit logs and publishes an event.
func (s *Server) emit(e *events.Event) { s.events.Emit(e) }

// clientBanned reports whether a connecting client is banned. A bucket
// that does not answer lets the client in unless this node banned it
// itself (brakelocal.go); AUTH checks again.
func (s *Server) clientBanned(client string) bool {
	if s.brake.local.banned(client, time.Now()) {
		return true
	}
	if !s.brake.health.usable() {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), admitBanTimeout)
	defer cancel()
	_, banned, err := s.brake.clientBan(ctx, client)
	if err != nil && s.brake.health.failed() {
		s.log.Error().Err(err).Str("event", "auth_brake_unavailable").Str("ip", client).
			Msg("auth brake bucket unavailable: counting failures on this node until it answers")
	}
	return banned
}

// smtpLogger routes go-smtp's own messages (connection errors, panics) to zerolog.
type smtpLogger struct{ log zerolog.Logger }

func (l smtpLogger) Printf(format string, v ...any) { l.write(fmt.Sprintf(format, v...)) }
func (l smtpLogger) Println(v ...any)               { l.write(fmt.Sprintln(v...)) }

func (l smtpLogger) write(msg string) {
	msg = strings.TrimSpace(msg)
	if strings.Contains(msg, "panic") {
		l.log.Error().Str("event", "smtp_panic").Msg(msg)
		return
	}
	l.log.Debug().Str("event", "smtp_conn_error").Msg(msg)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func itoa(n int) string { return strconv.Itoa(n) }
