package smtp

// Tests for jetrelay's client patches (see PATCHES.md): DataSentError,
// per-phase timeouts and SendPipelined.

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/textproto"
	"os"
	"strings"
	"testing"
	"time"
)

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
	_, err = c.SendPipelined("s@example.org", nil, testRcpts, []byte("x\r\n"))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("second transaction = %v, want a timeout", err)
	}
	if err2 := c.Noop(); err2 != err {
		t.Fatalf("Noop after a failed pipeline = %v, want the same error (connection out of step)", err2)
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

// RFC 5321 section 4.5.3.2.5: a body write that makes no progress times
// out (Timeouts.DataBlock), lock-step and pipelined; nothing was sent, so
// it is not a DataSentError.
func TestDataBlockTimeout(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd\r\n"), 1<<14) // 1 MiB
	for _, pipelined := range []bool{false, true} {
		hold := make(chan struct{})
		c := pipeServer(t, func(sc net.Conn) {
			br := bufio.NewReader(sc)
			io.WriteString(sc, "220 mx\r\n")
			br.ReadString('\n')
			io.WriteString(sc, ehloReply)
			if pipelined {
				readBatch(br, "DATA")
				io.WriteString(sc, "250 ok\r\n250 ok\r\n354 go\r\n")
			} else {
				for _, r := range []string{"250 ok\r\n", "250 ok\r\n", "354 go\r\n"} {
					br.ReadString('\n')
					io.WriteString(sc, r)
				}
			}
			<-hold // the body is never read
		})
		c.Timeouts.DataBlock = 100 * time.Millisecond
		var err error
		if pipelined {
			_, err = c.SendPipelined("s@example.org", nil, testRcpts[1:2], body)
		} else {
			err = c.SendMail("s@example.org", []string{"b@example.org"}, bytes.NewReader(body))
		}
		close(hold)
		var sent *DataSentError
		if !errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &sent) {
			t.Fatalf("pipelined=%v: %v, want a write timeout before the final dot", pipelined, err)
		}
	}
}
