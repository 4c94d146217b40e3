// Package sink is a development SMTP sink, like Postfix's smtp-sink: it
// accepts every message on a loopback port, counts messages, recipients,
// bytes and connections, and throws the bodies away (or saves them with
// Options.DumpDir). It exists to measure relays and load generators, so it
// promises:
//
//   - Exact counters: Stats is a consistent snapshot taken under one lock, and
//     WaitFor returns the arrival time of the Nth message since the last Reset,
//     which is what an end-to-end measurement needs.
//   - Deterministic failures: Options.TempFail and PermFail answer an exact
//     share of RCPTs (or DATA commands) with 451 4.7.1 / 550 5.1.1, chosen by a
//     counter (see failPlan), so tests can predict the counts.
//   - Loopback only unless Options.AllowRemote is set.
//   - Cheap: the server (conn.go) is a small line-oriented SMTP server that
//     reads DATA a line at a time with bufio.ReadSlice rather than a byte at a
//     time, so it takes little CPU from the relay it measures on a shared
//     machine. Every limit is set (size, recipients, command line, timeouts).
//
// The HTTP control surface (/count, /reset, /wait) is in http.go.
package sink

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for the Options fields left zero.
const (
	DefaultMaxMessageBytes = 64 << 20
	DefaultMaxRecipients   = 1000
	DefaultTimeout         = 2 * time.Minute
	DefaultDomain          = "sink.jetrelay.test"

	// maxArrivals bounds the stored arrival times (8 bytes each, 128 MiB max);
	// WaitFor for a later message reports ErrArrivalNotKept.
	maxArrivals = 1 << 24
)

// FailAt says which command the failure shares apply to.
type FailAt string

// Where failures are injected.
const (
	FailAtRcpt FailAt = "rcpt"
	FailAtData FailAt = "data"
)

// Options configure a Sink. Zero values get the defaults above.
type Options struct {
	// Addr is the SMTP listen address, e.g. 127.0.0.1:2525 (port 0 picks one).
	Addr string
	// AllowRemote permits a non-loopback Addr.
	AllowRemote bool
	// TLS, when set, offers STARTTLS with this configuration.
	TLS *tls.Config
	// TempFail and PermFail are shares in basis points (100 = 1%) of RCPTs
	// (or DATA commands, see FailAt) answered 451 4.7.1 and 550 5.1.1.
	TempFail, PermFail int
	// FailAt is FailAtRcpt (default) or FailAtData.
	FailAt FailAt
	// Seed offsets the failure counter, to shift which commands fail.
	Seed uint64
	// DumpDir, when set, receives every accepted message as NNNNNNNN.eml.
	DumpDir string
	// Auth, when set, makes the sink offer AUTH PLAIN and require it before
	// MAIL; it reports whether the credentials are good.
	Auth func(user, pass string) bool
	// MaxMessageBytes, MaxRecipients and Timeout (read and write) limit a session.
	MaxMessageBytes int64
	MaxRecipients   int
	Timeout         time.Duration
	// Domain is the greeting and EHLO name.
	Domain string
	// ErrorLog receives connection and dump errors; nil discards them.
	ErrorLog *log.Logger
}

// Stats is a snapshot of the counters since the last Reset.
type Stats struct {
	Messages    int64 `json:"messages"`
	Rcpts       int64 `json:"rcpts"`
	Bytes       int64 `json:"bytes"`
	Connections int64 `json:"connections"`
	TempFailed  int64 `json:"tempfailed"`
	PermFailed  int64 `json:"permfailed"`
	// FirstUnixNs and LastUnixNs are the arrival times of the first and the
	// latest message (0 before any).
	FirstUnixNs int64 `json:"first_unix_ns"`
	LastUnixNs  int64 `json:"last_unix_ns"`
}

// ErrArrivalNotKept means the Nth arrival time was beyond maxArrivals.
var ErrArrivalNotKept = errors.New("sink: arrival time not kept (too many messages since reset)")

// Sink is a running (after Start) SMTP sink. Its methods are safe for
// concurrent use.
type Sink struct {
	opts  Options
	ln    net.Listener
	plan  *failPlan
	seq   atomic.Uint64 // dump file numbers
	conns sync.WaitGroup

	mu       sync.Mutex
	stats    Stats
	arrivals []int64
	waiters  map[chan struct{}]int64 // wake channel -> message count awaited
	open     map[net.Conn]struct{}   // live connections, closed by Close
	done     chan struct{}
}

// New checks opts and builds a sink; Start opens its listener.
func New(opts Options) (*Sink, error) {
	if err := CheckListenAddr(opts.Addr, opts.AllowRemote); err != nil {
		return nil, err
	}
	if opts.FailAt == "" {
		opts.FailAt = FailAtRcpt
	}
	if opts.FailAt != FailAtRcpt && opts.FailAt != FailAtData {
		return nil, fmt.Errorf("sink: fail-at %q: want rcpt or data", opts.FailAt)
	}
	plan, err := newFailPlan(opts.TempFail, opts.PermFail, opts.Seed)
	if err != nil {
		return nil, err
	}
	setDefaults(&opts)
	s := &Sink{opts: opts, plan: plan, waiters: map[chan struct{}]int64{},
		open: map[net.Conn]struct{}{}, done: make(chan struct{})}
	return s, nil
}

func setDefaults(o *Options) {
	if o.MaxMessageBytes <= 0 {
		o.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if o.MaxRecipients <= 0 {
		o.MaxRecipients = DefaultMaxRecipients
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Domain == "" {
		o.Domain = DefaultDomain
	}
	if o.ErrorLog == nil {
		o.ErrorLog = log.New(io.Discard, "", 0)
	}
}

// Start listens on Options.Addr and serves in the background.
func (s *Sink) Start() error {
	ln, err := net.Listen("tcp", s.opts.Addr)
	if err != nil {
		return fmt.Errorf("sink: %w", err)
	}
	s.ln = ln
	go s.accept()
	return nil
}

func (s *Sink) accept() {
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				s.opts.ErrorLog.Printf("sink: accept: %v", err)
			}
			return
		}
		if !s.track(nc) {
			nc.Close()
			return
		}
		go func() {
			defer s.untrack(nc)
			newConn(s, nc).serve()
		}()
	}
}

// track registers a new connection; false once the sink is closed.
func (s *Sink) track(nc net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.done:
		return false
	default:
	}
	s.stats.Connections++
	s.open[nc] = struct{}{}
	s.conns.Add(1)
	return true
}

func (s *Sink) untrack(nc net.Conn) {
	s.mu.Lock()
	delete(s.open, nc)
	s.mu.Unlock()
	s.conns.Done()
}

// Addr is the listening address (nil before Start).
func (s *Sink) Addr() net.Addr {
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Close stops the listener and closes every connection; waiters get an error.
func (s *Sink) Close() error {
	s.mu.Lock()
	select {
	case <-s.done:
		s.mu.Unlock()
		return nil
	default:
		close(s.done)
	}
	for nc := range s.open {
		nc.Close()
	}
	s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	err := s.ln.Close()
	s.conns.Wait()
	return err
}

// Stats returns the counters since the last Reset.
func (s *Sink) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Reset zeroes the counters and arrival times. Pending WaitFor calls keep
// waiting, now counting from the reset.
func (s *Sink) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats = Stats{}
	s.arrivals = s.arrivals[:0]
}

// WaitFor blocks until n messages have arrived since the last Reset and
// returns the arrival time of the nth; it fails when ctx ends or the sink closes.
func (s *Sink) WaitFor(ctx context.Context, n int64) (time.Time, error) {
	if n < 1 {
		return time.Time{}, fmt.Errorf("sink: wait for %d messages: want n >= 1", n)
	}
	for {
		s.mu.Lock()
		if s.stats.Messages >= n {
			defer s.mu.Unlock()
			if n > int64(len(s.arrivals)) {
				return time.Time{}, ErrArrivalNotKept
			}
			return time.Unix(0, s.arrivals[n-1]), nil
		}
		ch := make(chan struct{})
		s.waiters[ch] = n
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			s.dropWaiter(ch)
			return time.Time{}, fmt.Errorf("sink: waiting for message %d: %w", n, ctx.Err())
		case <-s.done:
			s.dropWaiter(ch)
			return time.Time{}, errors.New("sink: closed")
		}
	}
}

func (s *Sink) dropWaiter(ch chan struct{}) {
	s.mu.Lock()
	delete(s.waiters, ch)
	s.mu.Unlock()
}

// delivered records one accepted message and wakes the waiters it satisfies.
func (s *Sink) delivered(bytes, rcpts int64) {
	now := time.Now().UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	st := &s.stats
	st.Messages++
	st.Rcpts += rcpts
	st.Bytes += bytes
	if st.FirstUnixNs == 0 {
		st.FirstUnixNs = now
	}
	st.LastUnixNs = now
	if len(s.arrivals) < maxArrivals {
		s.arrivals = append(s.arrivals, now)
	}
	for ch, n := range s.waiters {
		if st.Messages >= n {
			close(ch)
			delete(s.waiters, ch)
		}
	}
}

// failed counts one injected failure.
func (s *Sink) failed(v verdict) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v == verdictTemp {
		s.stats.TempFailed++
	} else {
		s.stats.PermFailed++
	}
}

// CheckListenAddr refuses addresses that are not loopback IPs (or
// "localhost") unless allowRemote; an empty host means every interface.
func CheckListenAddr(addr string, allowRemote bool) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("listen address %q: %w", addr, err)
	}
	if allowRemote || host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("refusing non-loopback listen address %q (use a 127.0.0.0/8 address, or allow remote)", addr)
}
