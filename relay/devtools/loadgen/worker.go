package loadgen

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Backoff between failed connection attempts of one worker.
const (
	minBackoff = 10 * time.Millisecond
	maxBackoff = time.Second
	// codeNet is the failure key for errors that carry no SMTP reply.
	codeNet = "net"
	// codeClosing is the reply that ends a session (RFC 5321 §3.8).
	codeClosing = 421
)

var errStopped = errors.New("run stopped")

// stage says how far a transaction got, to know whether it needs an RSET.
type stage int

const (
	stageMail stage = iota
	stageRcpt
	stageData
	stageBody
	stageEnd
)

// worker drives one connection at a time; its fields are its own, read by
// Run only after the worker has returned.
type worker struct {
	b        *Bench
	id       int
	tlsCfg   *tls.Config
	mailOpts *smtp.MailOptions
	raw      net.Conn
	c        *smtp.Client

	hist     histogram
	failed   map[string]int64
	firstErr error
	firstAt  time.Time
	connects int64
	connErrs int // consecutive failed connection attempts

	buf, rcptBuf []byte
	dates        dateCache
}

func newWorker(b *Bench, id int) *worker {
	host, _, _ := net.SplitHostPort(b.opts.Server)
	return &worker{
		b:  b,
		id: id,
		tlsCfg: &tls.Config{
			ServerName:         host,
			InsecureSkipVerify: b.opts.Insecure, //nolint:gosec // the user asked for --insecure
			RootCAs:            b.opts.RootCAs,
			ClientSessionCache: tls.NewLRUClientSessionCache(1),
			MinVersion:         tls.VersionTLS12,
		},
		mailOpts: &smtp.MailOptions{Size: int64(b.opts.Size)},
		failed:   map[string]int64{},
		buf:      make([]byte, 0, b.opts.Size+len("\r\n")),
		rcptBuf:  make([]byte, 0, len(b.opts.Rcpt)+20),
	}
}

// loop takes message numbers until they run out, ctx ends, or connecting
// keeps failing.
func (w *worker) loop(ctx context.Context) {
	defer w.hangUp()
	for ctx.Err() == nil {
		n := w.b.next.Add(1)
		if n > int64(w.b.opts.Messages) {
			return
		}
		if w.c == nil {
			if err := w.connect(ctx); err != nil {
				if errors.Is(err, errStopped) {
					return
				}
				w.b.done.Add(1)
				w.fail(err)
				w.connErrs++
				if w.connErrs >= maxConnectErrors || !w.backoff(ctx) {
					return
				}
				continue
			}
			w.connErrs = 0
		}
		w.send(n)
	}
}

// send submits message n on the open connection and accounts for it.
func (w *worker) send(n int64) {
	w.rcptBuf = w.b.rcpt.appendTo(w.rcptBuf[:0], n)
	rcpt := string(w.rcptBuf)
	w.buf = w.b.tmpl.render(w.buf, n, w.rcptBuf, w.dates.get(time.Now()))
	t0 := time.Now()
	st, err := w.transact(rcpt)
	lat := time.Since(t0)
	w.b.done.Add(1)
	if err == nil {
		w.hist.record(lat)
		w.b.sent.Add(1)
		return
	}
	w.fail(err)
	w.recover(st, err)
}

// transact runs MAIL, RCPT, DATA and the body (RFC 5321 §3.3).
func (w *worker) transact(rcpt string) (stage, error) {
	if err := w.c.Mail(w.b.opts.From, w.mailOpts); err != nil {
		return stageMail, fmt.Errorf("MAIL: %w", err)
	}
	if err := w.c.Rcpt(rcpt, nil); err != nil {
		return stageRcpt, fmt.Errorf("RCPT: %w", err)
	}
	wc, err := w.c.Data()
	if err != nil {
		return stageData, fmt.Errorf("DATA: %w", err)
	}
	if _, err := wc.Write(w.buf); err != nil {
		_ = wc.Close()
		return stageBody, fmt.Errorf("DATA body: %w", err)
	}
	if err := wc.Close(); err != nil {
		return stageEnd, fmt.Errorf("end of DATA: %w", err)
	}
	return stageEnd, nil
}

// recover leaves the connection ready for the next message or drops it: a
// reply other than 421 keeps it (with an RSET if MAIL was accepted and the
// transaction is still open); 421 and errors without a reply drop it.
func (w *worker) recover(st stage, err error) {
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code == codeClosing || st == stageBody {
		w.drop()
		return
	}
	if st == stageRcpt || st == stageData {
		if rerr := w.c.Reset(); rerr != nil {
			w.drop()
		}
	}
}

func (w *worker) fail(err error) {
	code := codeNet
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		code = strconv.Itoa(se.Code)
	}
	w.failed[code]++
	if w.firstErr == nil {
		w.firstErr, w.firstAt = err, time.Now()
	}
}

// backoff waits before the next connection attempt; false if ctx ended.
func (w *worker) backoff(ctx context.Context) bool {
	d := min(minBackoff<<(w.connErrs-1), maxBackoff)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// connect dials, secures and authenticates a connection; the whole
// handshake is bounded by one Timeout.
func (w *worker) connect(ctx context.Context) error {
	d := net.Dialer{Timeout: w.b.opts.Timeout}
	raw, err := d.DialContext(ctx, "tcp", w.b.addr)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	if !w.b.conns.add(w.id, raw) {
		raw.Close()
		return errStopped
	}
	watchdog := time.AfterFunc(w.b.opts.Timeout, func() { raw.Close() })
	c, err := w.handshake(raw)
	stopped := watchdog.Stop()
	if err == nil && !stopped {
		err = errors.New("handshake timed out")
	}
	if err != nil {
		w.b.conns.remove(w.id)
		raw.Close()
		return fmt.Errorf("connect: %w", err)
	}
	w.raw, w.c = raw, c
	w.connects++
	return nil
}

func (w *worker) handshake(raw net.Conn) (*smtp.Client, error) {
	var c *smtp.Client
	switch w.b.opts.TLS {
	case TLSImplicit:
		tc := tls.Client(raw, w.tlsCfg)
		if err := tc.Handshake(); err != nil {
			return nil, fmt.Errorf("TLS: %w", err)
		}
		c = smtp.NewClient(tc)
	case TLSStartTLS:
		// Greets, says EHLO and STARTTLS; the TLS handshake runs with the
		// next command (our EHLO below).
		var err error
		if c, err = smtp.NewClientStartTLS(raw, w.tlsCfg); err != nil {
			return nil, fmt.Errorf("STARTTLS: %w", err)
		}
	default:
		c = smtp.NewClient(raw)
	}
	c.CommandTimeout = w.b.opts.Timeout
	c.SubmissionTimeout = w.b.opts.Timeout
	if err := c.Hello(w.b.opts.EHLO); err != nil {
		return nil, fmt.Errorf("EHLO: %w", err)
	}
	if w.b.opts.User == "" {
		return c, nil
	}
	if !c.SupportsAuth(sasl.Plain) {
		return nil, errors.New("server does not offer AUTH PLAIN")
	}
	if err := c.Auth(sasl.NewPlainClient("", w.b.opts.User, w.b.opts.Password)); err != nil {
		return nil, fmt.Errorf("AUTH: %w", err)
	}
	return c, nil
}

// drop closes the current connection without QUIT.
func (w *worker) drop() {
	if w.c == nil {
		return
	}
	w.b.conns.remove(w.id)
	w.raw.Close()
	w.raw, w.c = nil, nil
}

// hangUp says QUIT (bounded by Timeout) and closes.
func (w *worker) hangUp() {
	if w.c == nil {
		return
	}
	_ = w.c.Quit()
	w.drop()
}

// tracker holds every open connection so that a hard stop can close them.
type tracker struct {
	mu     sync.Mutex
	conns  map[int]net.Conn
	closed bool
}

// add registers worker id's connection; false once closeAll has run.
func (t *tracker) add(id int, c net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	if t.conns == nil {
		t.conns = map[int]net.Conn{}
	}
	t.conns[id] = c
	return true
}

func (t *tracker) remove(id int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.conns, id)
}

func (t *tracker) closeAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	for _, c := range t.conns {
		c.Close()
	}
}

// resolve returns the address to dial; unless allowRemote, every address
// the host resolves to must be loopback, and the first is dialled.
func resolve(ctx context.Context, server string, allowRemote bool) (string, error) {
	host, port, err := net.SplitHostPort(server)
	if err != nil || host == "" || port == "" {
		return "", fmt.Errorf("loadgen: server %q: want host:port", server)
	}
	if allowRemote {
		return server, nil
	}
	if ip := net.ParseIP(host); ip != nil {
		if !ip.IsLoopback() {
			return "", fmt.Errorf("loadgen: refusing non-loopback server %s (allow remote servers explicitly)", server)
		}
		return server, nil
	}
	ips, err := net.DefaultResolver.LookupIPAddr(ctx, host)
	if err != nil || len(ips) == 0 {
		return "", fmt.Errorf("loadgen: resolve %s: %v", host, err)
	}
	for _, ip := range ips {
		if !ip.IP.IsLoopback() {
			return "", fmt.Errorf("loadgen: refusing non-loopback server %s (%s; allow remote servers explicitly)", server, ip.IP)
		}
	}
	return net.JoinHostPort(ips[0].IP.String(), port), nil
}
