package smtp

// Tests for jetrelay's client patches (see PATCHES.md): bounded replies,
// DataSentError, per-phase timeouts and SendPipelined.

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/textproto"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// endless yields n octets of 'a' without holding them.
type endless struct{ n int64 }

func (e *endless) Read(b []byte) (int, error) {
	if e.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > e.n {
		b = b[:e.n]
	}
	for i := range b {
		b[i] = 'a'
	}
	e.n -= int64(len(b))
	return len(b), nil
}

// pipeServer runs serve on the server end of a synchronous in-memory
// connection: every octet it writes has been read by the client.
func pipeServer(t *testing.T, serve func(net.Conn)) *Client {
	t.Helper()
	cc, sc := net.Pipe()
	go func() {
		defer sc.Close()
		serve(sc)
	}()
	c := NewClient(cc)
	t.Cleanup(func() { c.Close() })
	return c
}

func TestReplyHugeLineReadsOneBuffer(t *testing.T) {
	var written atomic.Int64
	done := make(chan struct{})
	c := pipeServer(t, func(sc net.Conn) {
		defer close(done)
		io.WriteString(sc, "220-")
		n, _ := io.CopyBuffer(sc, &endless{n: 256 << 20}, make([]byte, 1024))
		written.Store(n)
	})
	err := c.Hello("client.example")
	var tooLong *ReplyTooLongError
	if !errors.As(err, &tooLong) || tooLong.Limit != ReplyLimitLineLength || tooLong.Max != DefaultMaxReplyLineLength {
		t.Fatalf("Hello = %v, want a line length ReplyTooLongError", err)
	}
	<-done // the client closed the connection, so the server stopped
	if n := written.Load(); n > 8<<10 {
		t.Fatalf("client read %d octets of a 256 MiB line, want at most one buffer", n)
	}
	if err := c.Noop(); err != tooLong {
		t.Fatalf("Noop after a broken reply = %v, want the same error", err)
	}
}

func TestReplyTooManyLines(t *testing.T) {
	c := pipeServer(t, func(sc net.Conn) {
		io.WriteString(sc, "220 mx\r\n")
		br := bufio.NewReader(sc)
		br.ReadString('\n')
		for i := 0; i < 200; i++ {
			if _, err := io.WriteString(sc, "250-EXT\r\n"); err != nil {
				return
			}
		}
		io.WriteString(sc, "250 END\r\n")
	})
	err := c.Hello("client.example")
	var tooLong *ReplyTooLongError
	if !errors.As(err, &tooLong) || tooLong.Limit != ReplyLimitLines || tooLong.Max != 100 {
		t.Fatalf("Hello = %v, want a lines ReplyTooLongError", err)
	}
}

func TestReplyTooManyBytes(t *testing.T) {
	line := "250-" + strings.Repeat("x", 1400) + "\r\n" // 50 of them: over 70 KiB
	c := pipeServer(t, func(sc net.Conn) {
		io.WriteString(sc, "220 mx\r\n")
		bufio.NewReader(sc).ReadString('\n')
		for i := 0; i < 50; i++ {
			if _, err := io.WriteString(sc, line); err != nil {
				return
			}
		}
		io.WriteString(sc, "250 END\r\n")
	})
	err := c.Hello("client.example")
	var tooLong *ReplyTooLongError
	if !errors.As(err, &tooLong) || tooLong.Limit != ReplyLimitBytes || tooLong.Max != 64<<10 {
		t.Fatalf("Hello = %v, want a bytes ReplyTooLongError", err)
	}
}

func TestReplyLimitsConfigurable(t *testing.T) {
	c := pipeServer(t, func(sc net.Conn) {
		io.WriteString(sc, "220 mx\r\n")
		bufio.NewReader(sc).ReadString('\n')
		io.WriteString(sc, "250-mx\r\n250-A\r\n250 B\r\n")
	})
	c.MaxReplyLines = 2
	var tooLong *ReplyTooLongError
	if err := c.Hello("client.example"); !errors.As(err, &tooLong) || tooLong.Max != 2 {
		t.Fatalf("Hello = %v, want a lines ReplyTooLongError at 2", err)
	}
}

func TestReplyMultiLineWithinLimits(t *testing.T) {
	long := strings.Repeat("y", DefaultMaxReplyLineLength-len("550 5.1.1 "))
	c := pipeServer(t, func(sc net.Conn) {
		br := bufio.NewReader(sc)
		io.WriteString(sc, "220-mx.example ESMTP\r\n220 ready\r\n")
		br.ReadString('\n')
		io.WriteString(sc, "250-mx.example\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-X-LONG "+long[9:]+"\r\n250 8BITMIME\r\n")
		br.ReadString('\n')
		io.WriteString(sc, "550-5.1.1 no such user\r\n550-5.1.1 really\r\n550 5.1.1 "+long+"\n")
		br.ReadString('\n')
		io.WriteString(sc, "250\r\n")
	})
	if err := c.Hello("client.example"); err != nil {
		t.Fatal(err)
	}
	if ok, v := c.Extension("SIZE"); !ok || v != "1000" {
		t.Fatalf("SIZE = %v %q", ok, v)
	}
	if ok, _ := c.Extension("8BITMIME"); !ok {
		t.Fatal("8BITMIME not seen")
	}
	err := c.Mail("a@example.org", nil)
	var se *SMTPError
	if !errors.As(err, &se) || se.Code != 550 || se.EnhancedCode != (EnhancedCode{5, 1, 1}) ||
		se.Message != "no such user\nreally\n"+long {
		t.Fatalf("Mail = %#v", err)
	}
	if err := c.Noop(); err != nil { // a bare "250" is a complete reply (RFC 5321 section 4.2)
		t.Fatalf("Noop = %v", err)
	}
}

// FuzzReadReply: the reply reader never breaks its limits, and any reply
// textproto reads (within the limits) it reads the same way.
func FuzzReadReply(f *testing.F) {
	for _, s := range []string{
		"250 ok\r\n", "250-a\r\n250-b\r\n250 c\r\n", "250-a\r\n251 b\r\n250 c\r\n", "550 5.1.1 x\n",
		"220", "2500 x\r\n", "25x ok\r\n", "250-\r\n250 \r\n", "250 " + strings.Repeat("z", 40) + "\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		lim := replyLimits{lines: 5, lineLen: 30, bytes: 80}
		code, msg, err := readReply(bufio.NewReaderSize(bytes.NewReader(in), 16), lim)
		var tooLong *ReplyTooLongError
		if errors.As(err, &tooLong) {
			return
		}
		if err == nil && (strings.Count(msg, "\n") >= lim.lines || len(msg) > lim.bytes || code < 100 || code > 999) {
			t.Fatalf("reply %d %q breaks the limits", code, msg)
		}
		if len(in) == 0 || in[len(in)-1] != '\n' {
			return
		}
		wcode, wmsg, werr := textproto.NewReader(bufio.NewReader(bytes.NewReader(in))).ReadResponse(0)
		if werr == nil && (err != nil || code != wcode || msg != wmsg) {
			t.Fatalf("readReply = %d %q %v, textproto = %d %q", code, msg, err, wcode, wmsg)
		}
	})
}

// loopMX is a scripted server on loopback that offers PIPELINING.
func loopMX(t *testing.T, serve func(br *bufio.Reader, w net.Conn)) *Client {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		sc, err := ln.Accept()
		if err != nil {
			return
		}
		defer sc.Close()
		br := bufio.NewReader(sc)
		io.WriteString(sc, "220 mx.example ESMTP\r\n")
		br.ReadString('\n')
		io.WriteString(sc, ehloReply)
		serve(br, sc)
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := NewClient(conn)
	t.Cleanup(func() { c.Close() })
	if err := c.Hello("client.example"); err != nil {
		t.Fatal(err)
	}
	return c
}

const ehloReply = "250-mx.example\r\n250-PIPELINING\r\n250-SIZE 100000\r\n250-DSN\r\n250-SMTPUTF8\r\n250 8BITMIME\r\n"

// readBatch reads command lines up to and including last.
func readBatch(br *bufio.Reader, last string) []string {
	var cmds []string
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			return cmds
		}
		l = strings.TrimSuffix(l, "\r\n")
		cmds = append(cmds, l)
		if l == last {
			return cmds
		}
	}
}

// readMessage reads DATA content up to the final dot, unstuffed.
func readMessage(br *bufio.Reader) string {
	b, _ := io.ReadAll(textproto.NewReader(br).DotReader())
	return string(b)
}

var testRcpts = []PipelinedRcpt{
	{Addr: "a@example.org", Opts: &RcptOptions{Notify: []DSNNotify{DSNNotifyFailure, DSNNotifyDelayed},
		OriginalRecipientType: DSNAddressTypeUTF8, OriginalRecipient: "ä@example.org"}},
	{Addr: "b@example.org"},
	{Addr: "c@example.org"},
}

func TestSendPipelined(t *testing.T) {
	type seen struct {
		cmds []string
		body string
	}
	got := make(chan seen, 2)
	c := loopMX(t, func(br *bufio.Reader, w net.Conn) {
		for i := 0; i < 2; i++ {
			// Nothing is answered before DATA arrives: a lock-step
			// client would hang here.
			cmds := readBatch(br, "DATA")
			io.WriteString(w, "250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 unknown\r\n250 2.1.5 ok\r\n354 go\r\n")
			body := readMessage(br)
			io.WriteString(w, "250 2.0.0 queued as X\r\n")
			got <- seen{cmds, body}
		}
	})
	body := "Subject: x\r\n\r\n.leading dot\r\n..two\r\nend"
	opts := &MailOptions{Size: 100, Return: DSNReturnHeaders, EnvelopeID: "id+1"}
	for i := 0; i < 2; i++ {
		res, err := c.SendPipelined("s@example.org", opts, testRcpts, []byte(body))
		if err != nil {
			t.Fatal(err)
		}
		if res.Accepted != 2 || res.Err(0) != nil || res.Err(2) != nil || res.Err(1) == nil ||
			res.Err(1).Code != 550 || res.FinalText != "2.0.0 queued as X" {
			t.Fatalf("result %+v", res)
		}
		s := <-got
		want := []string{
			"MAIL FROM:<s@example.org> BODY=8BITMIME SIZE=100 RET=HDRS ENVID=id+2B1",
			"RCPT TO:<a@example.org> NOTIFY=FAILURE,DELAY ORCPT=UTF-8;ä@example.org",
			"RCPT TO:<b@example.org>", "RCPT TO:<c@example.org>", "DATA",
		}
		if strings.Join(s.cmds, "|") != strings.Join(want, "|") {
			t.Fatalf("commands %q, want %q (no RSET after a finished transaction)", s.cmds, want)
		}
		if want := strings.ReplaceAll(body, "\r\n", "\n") + "\n"; s.body != want {
			t.Fatalf("body %q", s.body)
		}
	}
}

// The pipelined commands are the lock-step ones (one encoder).
func TestSendPipelinedEncodesLikeLockStep(t *testing.T) {
	lines := make(chan []string, 2)
	c := loopMX(t, func(br *bufio.Reader, w net.Conn) {
		var lock []string
		for i := 0; i < 1+len(testRcpts); i++ {
			l, _ := br.ReadString('\n')
			lock = append(lock, strings.TrimSuffix(l, "\r\n"))
			io.WriteString(w, "250 ok\r\n")
		}
		lines <- lock
		readBatch(br, "RSET")
		io.WriteString(w, "250 ok\r\n")
		br.ReadString('\n') // upstream's Reset makes the client say EHLO again
		io.WriteString(w, ehloReply)
		cmds := readBatch(br, "DATA")
		lines <- cmds[:len(cmds)-1]
		io.WriteString(w, "550 no\r\n550 no\r\n550 no\r\n550 no\r\n554 no\r\n")
	})
	opts := &MailOptions{UTF8: true, Return: DSNReturnFull, EnvelopeID: "e=1"}
	if err := c.Mail("s@example.org", opts); err != nil {
		t.Fatal(err)
	}
	for _, r := range testRcpts {
		if err := c.Rcpt(r.Addr, r.Opts); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Reset(); err != nil {
		t.Fatal(err)
	}
	res, err := c.SendPipelined("s@example.org", opts, testRcpts, []byte("x\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Mail == nil || res.Err(1) != res.Mail || res.Data == nil {
		t.Fatalf("result %+v", res)
	}
	lock, piped := <-lines, <-lines
	if strings.Join(lock, "|") != strings.Join(piped, "|") {
		t.Fatalf("lock-step %q, pipelined %q", lock, piped)
	}
}

// RFC 2920 section 3.1: a refused MAIL, and a server answering DATA with
// 354 anyway, gets an empty message; nothing is delivered.
func TestSendPipelinedMailRefused(t *testing.T) {
	got := make(chan string, 1)
	c := loopMX(t, func(br *bufio.Reader, w net.Conn) {
		readBatch(br, "DATA")
		io.WriteString(w, "451 4.3.0 try later\r\n503 no\r\n503 no\r\n503 no\r\n354 go\r\n")
		got <- readMessage(br)
		io.WriteString(w, "554 no transaction\r\n")
		cmds := readBatch(br, "DATA")
		got <- cmds[0]
		io.WriteString(w, "250 ok\r\n250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n")
		readMessage(br)
		io.WriteString(w, "250 ok\r\n")
	})
	res, err := c.SendPipelined("s@example.org", nil, testRcpts, []byte("x\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range testRcpts {
		if e := res.Err(i); e == nil || e.Code != 451 {
			t.Fatalf("recipient %d settled by %v, want the MAIL reply", i, e)
		}
	}
	if b := <-got; b != "" {
		t.Fatalf("message after refused MAIL: %q", b)
	}
	if _, err := c.SendPipelined("s@example.org", nil, testRcpts, []byte("x\r\n")); err != nil {
		t.Fatal(err)
	}
	if first := <-got; !strings.HasPrefix(first, "MAIL ") {
		t.Fatalf("after a refused MAIL the next batch starts with %q, want MAIL (no RSET)", first)
	}
}

func TestSendPipelinedNoRecipientAccepted(t *testing.T) {
	got := make(chan string, 2)
	c := loopMX(t, func(br *bufio.Reader, w net.Conn) {
		readBatch(br, "DATA")
		io.WriteString(w, "250 ok\r\n550 a\r\n550 b\r\n450 c\r\n354 go\r\n")
		got <- readMessage(br)
		io.WriteString(w, "554 5.5.1 no valid recipients\r\n")
		got <- readBatch(br, "DATA")[0]
		io.WriteString(w, "250 ok\r\n250 ok\r\n250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n")
		readMessage(br)
		io.WriteString(w, "250 ok\r\n")
	})
	res, err := c.SendPipelined("s@example.org", nil, testRcpts, []byte("x\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Accepted != 0 || res.Err(2).Code != 450 || res.Final != nil || res.FinalText != "" {
		t.Fatalf("result %+v", res)
	}
	if b := <-got; b != "" {
		t.Fatalf("message without recipients: %q", b)
	}
	if _, err := c.SendPipelined("s@example.org", nil, testRcpts, []byte("x\r\n")); err != nil {
		t.Fatal(err)
	}
	if first := <-got; !strings.HasPrefix(first, "MAIL ") {
		t.Fatalf("next batch starts with %q, want MAIL (the reply to the dot ended the transaction)", first)
	}
}

func TestSendPipelinedDataRefused(t *testing.T) {
	got := make(chan string, 1)
	hold := make(chan struct{})
	defer close(hold)
	c := loopMX(t, func(br *bufio.Reader, w net.Conn) {
		readBatch(br, "DATA")
		io.WriteString(w, "250 ok\r\n250 ok\r\n250 ok\r\n250 ok\r\n554 5.3.0 no data today\r\n")
		got <- readBatch(br, "DATA")[0]
		<-hold
	})
	res, err := c.SendPipelined("s@example.org", nil, testRcpts, []byte("x\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Accepted != 3 || res.Err(0) != res.Data || res.Data.Code != 554 {
		t.Fatalf("result %+v", res)
	}
	c.Timeouts.Mail = 100 * time.Millisecond // the server does not answer the second batch
	if _, err := c.SendPipelined("s@example.org", nil, testRcpts, []byte("x\r\n")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("second transaction = %v, want a timeout", err)
	}
	if first := <-got; first != "RSET" {
		t.Fatalf("next batch starts with %q, want RSET", first)
	}
}

func TestSendPipelined421ClosesTheConnection(t *testing.T) {
	c := loopMX(t, func(br *bufio.Reader, w net.Conn) {
		readBatch(br, "DATA")
		io.WriteString(w, "250 ok\r\n421 4.3.2 shutting down\r\n")
	})
	_, err := c.SendPipelined("s@example.org", nil, testRcpts, []byte("x\r\n"))
	var se *SMTPError
	if !errors.As(err, &se) || se.Code != 421 {
		t.Fatalf("SendPipelined = %v, want the 421", err)
	}
	if err := c.Noop(); err != se {
		t.Fatalf("Noop after 421 = %v", err)
	}
}

func TestSendPipelinedReplyTooLongBeforeData(t *testing.T) {
	c := loopMX(t, func(br *bufio.Reader, w net.Conn) {
		readBatch(br, "DATA")
		io.WriteString(w, "250 ok\r\n250 "+strings.Repeat("x", 5000)+"\r\n")
	})
	_, err := c.SendPipelined("s@example.org", nil, testRcpts, []byte("x\r\n"))
	var tooLong *ReplyTooLongError
	var sent *DataSentError
	if !errors.As(err, &tooLong) || errors.As(err, &sent) {
		t.Fatalf("SendPipelined = %v, want a ReplyTooLongError before data was sent", err)
	}
}

// RFC 5321 section 4.5.3.2.6: no reply to the final dot is "sent, reply
// lost", not "not sent".
func TestSendPipelinedFinalReplyLost(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reply string
		want  error
	}{
		{"timeout", "", os.ErrDeadlineExceeded},
		{"too long", "250-" + strings.Repeat("x\r\n250-", 200), ErrReplyTooLongForTest},
	} {
		tc := tc // go 1.13 module: one loop variable
		t.Run(tc.name, func(t *testing.T) {
			hold := make(chan struct{})
			c := loopMX(t, func(br *bufio.Reader, w net.Conn) {
				readBatch(br, "DATA")
				io.WriteString(w, "250 ok\r\n250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n")
				readMessage(br)
				io.WriteString(w, tc.reply)
				<-hold
			})
			defer close(hold)
			c.Timeouts.DataFinal = 200 * time.Millisecond
			_, err := c.SendPipelined("s@example.org", nil, testRcpts, []byte("x\r\n"))
			var sent *DataSentError
			if !errors.As(err, &sent) || !errorMatches(err, tc.want) {
				t.Fatalf("SendPipelined = %v, want a DataSentError for %v", err, tc.want)
			}
		})
	}
}

// ErrReplyTooLongForTest stands for any *ReplyTooLongError in errorMatches.
var ErrReplyTooLongForTest = errors.New("any ReplyTooLongError")

func errorMatches(err, want error) bool {
	if want == ErrReplyTooLongForTest {
		var tooLong *ReplyTooLongError
		return errors.As(err, &tooLong)
	}
	return errors.Is(err, want)
}

func TestLockStepFinalReplyLost(t *testing.T) {
	hold := make(chan struct{})
	c := loopMX(t, func(br *bufio.Reader, w net.Conn) {
		for _, r := range []string{"250 ok\r\n", "250 ok\r\n", "354 go\r\n"} {
			br.ReadString('\n')
			io.WriteString(w, r)
		}
		readMessage(br)
		<-hold
	})
	defer close(hold)
	c.Timeouts.DataFinal = 200 * time.Millisecond
	if err := c.Mail("s@example.org", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("a@example.org", nil); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "x\r\n")
	_, err = w.CloseWithResponse()
	var sent *DataSentError
	if !errors.As(err, &sent) || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("CloseWithResponse = %v, want a DataSentError timeout", err)
	}
}

func TestLockStepPhaseTimeouts(t *testing.T) {
	hold := make(chan struct{})
	c := loopMX(t, func(br *bufio.Reader, w net.Conn) {
		br.ReadString('\n')
		io.WriteString(w, "250 ok\r\n")
		br.ReadString('\n') // RCPT: never answered
		<-hold
	})
	defer close(hold)
	c.CommandTimeout = time.Hour
	c.Timeouts.Rcpt = 100 * time.Millisecond
	if err := c.Mail("s@example.org", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("a@example.org", nil); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Rcpt = %v, want the Rcpt timeout", err)
	}
}

func TestSendPipelinedNeedsPipelining(t *testing.T) {
	c := pipeServer(t, func(sc net.Conn) {
		br := bufio.NewReader(sc)
		io.WriteString(sc, "220 mx\r\n")
		br.ReadString('\n')
		io.WriteString(sc, "250 mx\r\n")
		br.ReadString('\n')
	})
	if _, err := c.SendPipelined("s@example.org", nil, testRcpts, nil); err == nil {
		t.Fatal("SendPipelined without PIPELINING succeeded")
	}
}

// FuzzAppendDotStuffed: the fast path writes what the DotWriter writes.
func FuzzAppendDotStuffed(f *testing.F) {
	for _, s := range []string{"", "a\r\n", ".\r\n", "a\r\n.b\r\n..c", "a\nb\r\n", "x\r", "\r\n.\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var want bytes.Buffer
		bw := bufio.NewWriter(&want)
		dw := textproto.NewWriter(bw).DotWriter()
		dw.Write(body)
		dw.Close()
		bw.Flush()
		if got := appendDotStuffed(nil, body); !bytes.Equal(got, want.Bytes()) {
			t.Fatalf("appendDotStuffed(%q) = %q, want %q", body, got, want.Bytes())
		}
	})
}
