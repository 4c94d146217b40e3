package queue_test

import (
	"bytes"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/rs/zerolog"
)

// Test tools for the publish tests (the servers come from queuetest): a
// TCP proxy that can lose a server's replies, a log sink to read.

const nodeWait = queuetest.NodeWait

// lossyProxy forwards TCP connections to a server; while losing is set it
// drops what the server sends (its replies and acks are lost on the way),
// and cut closes every connection so that clients reconnect.
type lossyProxy struct {
	ln     net.Listener
	target string
	losing atomic.Bool
	mu     sync.Mutex
	conns  []net.Conn
}

func startProxy(t testing.TB, target string) *lossyProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &lossyProxy{ln: ln, target: target}
	t.Cleanup(func() { ln.Close(); p.cut() })
	go p.serve()
	return p
}

func (p *lossyProxy) url() string { return "nats://" + p.ln.Addr().String() }

func (p *lossyProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.DialTimeout("tcp", p.target, nodeWait)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		go func() { _, _ = io.Copy(s, c) }()
		go p.down(c, s)
	}
}

// down copies server to client, dropping what arrives while losing.
func (p *lossyProxy) down(c, s net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := s.Read(buf)
		if n > 0 && !p.losing.Load() {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			c.Close()
			return
		}
	}
}

// cut closes every proxied connection.
func (p *lossyProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// syncBuffer is a log sink tests can read while it is written.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testLog logs to the test and to buf.
func testLog(t testing.TB, buf *syncBuffer) zerolog.Logger {
	return zerolog.New(io.MultiWriter(zerolog.NewTestWriter(t), buf)).Level(zerolog.DebugLevel)
}
