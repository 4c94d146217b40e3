package sink

import (
	"bytes"
	"context"
	"net"
	"testing"
	"time"
)

// BenchmarkAcceptPath measures the sink's own work per 4 KiB message:
// MAIL, RCPT (with a failure plan), DATA read line by line and discarded,
// counters and waiters updated; the connection is in memory.
func BenchmarkAcceptPath(b *testing.B) {
	s, err := New(Options{Addr: "127.0.0.1:0", TempFail: 1, PermFail: 1})
	if err != nil {
		b.Fatal(err)
	}
	line := []byte("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ab\r\n")
	body := bytes.Repeat(line, 4096/len(line))
	script := append([]byte("MAIL FROM:<a@x.test> SIZE=4096\r\nRCPT TO:<b@x.test>\r\nDATA\r\n"), body...)
	script = append(script, ".\r\n"...)
	fc := &memConn{}
	c := newConn(s, fc)
	c.helo = true
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		fc.r.Reset(script)
		c.r.Reset(fc)
		for i := 0; i < 3; i++ {
			line, err := c.readLine()
			if err != nil || !c.command(line) {
				b.Fatalf("command %d: %v", i, err)
			}
		}
	}
	if st := s.Stats(); st.Messages == 0 {
		b.Fatalf("no message counted: %+v", st)
	}
}

// memConn is a net.Conn reading from a bytes.Reader and discarding writes.
type memConn struct {
	net.Conn
	r bytes.Reader
}

func (m *memConn) Read(p []byte) (int, error)       { return m.r.Read(p) }
func (m *memConn) Write(p []byte) (int, error)      { return len(p), nil }
func (m *memConn) SetReadDeadline(time.Time) error  { return nil }
func (m *memConn) SetWriteDeadline(time.Time) error { return nil }
func (m *memConn) Close() error                     { return nil }

// BenchmarkTransaction measures one client's MAIL/RCPT/DATA over loopback
// against the sink, 4 KiB messages.
func BenchmarkTransaction(b *testing.B) {
	s, err := New(Options{Addr: "127.0.0.1:0"})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Start(); err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	c := dial(b, s, false)
	msg := string(bytes.Repeat([]byte("x123456789\r\n"), 4096/12))
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	n := int64(0)
	for b.Loop() {
		if err := sendMsg(c, []string{"b@x.test"}, msg); err != nil {
			b.Fatal(err)
		}
		n++
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.WaitFor(ctx, n); err != nil {
		b.Fatal(err)
	}
}
