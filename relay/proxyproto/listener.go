package proxyproto

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"
)

const (
	// DefaultTimeout is how long a peer has to send its header.
	DefaultTimeout = 5 * time.Second
	// DefaultMaxPending bounds connections whose header is being read or
	// that wait for Accept.
	DefaultMaxPending = 256
)

// Reasons a connection is closed before Accept returns it; Refused gets
// one of them, or a parse error wrapping ErrInvalid.
var (
	ErrNotAllowed = errors.New("peer is not allowed to send a PROXY protocol header")
	ErrTimeout    = errors.New("no PROXY protocol header within the time limit")
	ErrClosed     = errors.New("connection closed before a complete PROXY protocol header")
	ErrTooMany    = errors.New("too many connections waiting for their PROXY protocol header")
)

// Options configure a Listener.
type Options struct {
	// Allowed reports whether a peer may send headers (the load
	// balancers); others are closed at once. Required.
	Allowed func(netip.Addr) bool
	// Timeout bounds reading the header; default DefaultTimeout.
	Timeout time.Duration
	// MaxPending bounds connections between accept and Accept's return;
	// default DefaultMaxPending. More are closed at once.
	MaxPending int
	// Refused, if set, is told about every connection closed before
	// Accept returned it. It may be called from several goroutines.
	Refused func(peer net.Addr, reason error)
}

// Listener accepts connections from allowed peers and returns them once
// their header is read. Headers are read concurrently, each in its own
// goroutine, so a slow peer never holds up the others.
type Listener struct {
	net.Listener
	opts    Options
	results chan accepted
	sem     chan struct{}
	closing chan struct{}
	done    chan struct{} // closed when the accept loop ends; err is set
	err     error
	start   sync.Once
	stop    sync.Once
	wg      sync.WaitGroup

	mu      sync.Mutex
	closed  bool                  // Close has begun (guards starting the accept loop)
	pending map[net.Conn]struct{} // headers being read
}

type accepted struct {
	c   net.Conn
	err error
}

// NewListener wraps inner. It panics if o.Allowed is nil (a programming error).
func NewListener(inner net.Listener, o Options) *Listener {
	if o.Allowed == nil {
		panic("proxyproto: Options.Allowed is required")
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.MaxPending <= 0 {
		o.MaxPending = DefaultMaxPending
	}
	return &Listener{Listener: inner, opts: o, results: make(chan accepted), sem: make(chan struct{}, o.MaxPending),
		closing: make(chan struct{}), done: make(chan struct{}), pending: map[net.Conn]struct{}{}}
}

// Accept returns the next connection with a valid header, as a *Conn, or
// the inner listener's error (temporary ones are passed on and accepting
// goes on).
func (l *Listener) Accept() (net.Conn, error) {
	l.start.Do(l.startLoop)
	select {
	case a := <-l.results:
		return a.c, a.err
	case <-l.done:
		return nil, l.err
	}
}

// startLoop starts the accept loop, unless Close came first: then Accept
// reports the closed listener. Under mu, so that the loop's wg.Add
// happens before Close's wg.Wait or not at all.
func (l *Listener) startLoop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		l.err = net.ErrClosed
		close(l.done)
		return
	}
	l.wg.Add(1)
	go l.acceptLoop()
}

// Close stops accepting, ends the header reads in progress and waits for
// their goroutines.
func (l *Listener) Close() error {
	var err error
	l.stop.Do(func() {
		close(l.closing)
		err = l.Listener.Close()
		l.mu.Lock()
		l.closed = true
		for c := range l.pending {
			_ = c.SetReadDeadline(time.Now())
		}
		l.mu.Unlock()
	})
	l.wg.Wait()
	return err
}

func (l *Listener) acceptLoop() {
	defer l.wg.Done()
	for {
		raw, err := l.Listener.Accept()
		if err != nil {
			var ne interface{ Temporary() bool }
			if errors.As(err, &ne) && ne.Temporary() && l.deliver(accepted{err: err}) {
				continue
			}
			l.err = err
			close(l.done)
			return
		}
		l.admit(raw)
	}
}

// admit checks the peer and starts reading its header.
func (l *Listener) admit(raw net.Conn) {
	peer, ok := addrOf(raw.RemoteAddr())
	if !ok || !l.opts.Allowed(peer) {
		l.refuse(raw, ErrNotAllowed)
		return
	}
	select {
	case l.sem <- struct{}{}:
	default:
		l.refuse(raw, ErrTooMany)
		return
	}
	l.mu.Lock()
	l.pending[raw] = struct{}{}
	l.mu.Unlock()
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		defer func() { <-l.sem }()
		c, err := readHeader(raw, l.opts.Timeout)
		l.mu.Lock()
		delete(l.pending, raw)
		l.mu.Unlock()
		if err != nil && l.isClosing() {
			_ = raw.Close() // not the peer's fault: Close cut the read
			return
		}
		if err != nil {
			l.refuse(raw, err)
			return
		}
		if !l.deliver(accepted{c: c}) {
			_ = raw.Close()
		}
	}()
}

// deliver hands a to Accept, or reports false once the listener closes.
func (l *Listener) deliver(a accepted) bool {
	select {
	case l.results <- a:
		return true
	case <-l.closing:
		return false
	}
}

func (l *Listener) isClosing() bool {
	select {
	case <-l.closing:
		return true
	default:
		return false
	}
}

func (l *Listener) refuse(raw net.Conn, reason error) {
	_ = raw.Close()
	if l.opts.Refused != nil {
		l.opts.Refused(raw.RemoteAddr(), reason)
	}
}

// readHeader reads one header within timeout; bytes the peer sent after
// it stay readable from the returned Conn.
func readHeader(raw net.Conn, timeout time.Duration) (*Conn, error) {
	if err := raw.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return nil, err
	}
	buf := make([]byte, 0, MaxHeader)
	for {
		n, rerr := raw.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		h, used, err := Parse(buf)
		switch {
		case err == nil:
			if err := raw.SetReadDeadline(time.Time{}); err != nil {
				return nil, err
			}
			return newConn(raw, h, buf[used:]), nil
		case !errors.Is(err, ErrIncomplete):
			return nil, err
		case errors.Is(rerr, os.ErrDeadlineExceeded):
			return nil, ErrTimeout
		case rerr != nil:
			return nil, ErrClosed
		}
	}
}

// addrOf returns the IP of a TCP address (IPv4-mapped addresses unmapped).
func addrOf(a net.Addr) (netip.Addr, bool) {
	if ta, ok := a.(*net.TCPAddr); ok {
		ip, ok := netip.AddrFromSlice(ta.IP)
		return ip.Unmap(), ok
	}
	ap, err := netip.ParseAddrPort(a.String())
	return ap.Addr().Unmap(), err == nil
}
