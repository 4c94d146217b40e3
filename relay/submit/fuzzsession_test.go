package submit

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/rs/zerolog"
)

// fuzzSessionTimeout bounds one fuzz input's conversation: the client
// half-closes after its input, so the server must answer and close.
const fuzzSessionTimeout = 30 * time.Second

// panicWatch is the fuzz server's log sink: it discards everything and
// remembers a panic go-smtp recovered (smtpLogger's smtp_panic).
type panicWatch struct{ seen atomic.Pointer[string] }

func (p *panicWatch) Write(b []byte) (int, error) {
	if bytes.Contains(b, []byte("smtp_panic")) {
		s := string(b)
		p.seen.CompareAndSwap(nil, &s)
	}
	return len(b), nil
}

// fuzzServer starts one real submission server (real listeners, embedded
// JetStream, the auth brake) for the whole fuzz process. Loopback is a
// trusted network, so guessed passwords never ban the fuzzer.
func fuzzServer(f *testing.F) (*Server, *tls.Config, *panicWatch) {
	f.Helper()
	cfg := testConfig(f, func(c *config.Config) {
		c.Submission.TrustedNetworks = []string{"127.0.0.0/8"}
		c.Submission.AuthFailures.Delay = 0
		c.Submission.MaxMessageBytes = 64 << 10
	})
	q := queuetest.RunJetStream(f)
	tlsConf, err := LoadOrCreateTLS(settingsOf(cfg))
	if err != nil {
		f.Fatal(err)
	}
	pw := &panicWatch{}
	log := zerolog.New(pw)
	srv, err := New(Options{Settings: settingsOf(cfg), Queue: q, Events: events.NewEmitter(log, nil), Logger: log,
		TLS: tlsConf, Brake: openTestBrake(f, q)})
	if err != nil {
		f.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return srv, clientTLS(f, cfg), pw
}

// fuzzSeeds are realistic sessions; the first byte picks the listener
// (even: implicit TLS, odd: plaintext STARTTLS listener).
var fuzzSeeds = []string{
	"\x00EHLO client.test\r\nAUTH PLAIN " + plain(appUser, appPass) + "\r\n" +
		"MAIL FROM:<a@example.com>\r\nRCPT TO:<r@one.test>\r\nDATA\r\n" +
		"From: a@example.com\r\nSubject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n",
	"\x00EHLO client.test\r\nAUTH LOGIN\r\n" + b64(appUser) + "\r\n" + b64(appPass) + "\r\n" +
		"MAIL FROM:<a@example.com> BODY=8BITMIME SMTPUTF8\r\n" +
		"RCPT TO:<r@one.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;o@one.test\r\n" +
		"BDAT 40 LAST\r\nFrom: a@example.com\r\n\r\n0123456789012\r\n",
	"\x00EHLO client.test\r\nAUTH PLAIN " + plain(appUser, "wrong") + "\r\n" +
		"MAIL FROM:<alice.sender.test>\r\nRCPT TO:<bob>\r\nRSET\r\nNOOP\r\nVRFY x\r\nHELP\r\n",
	"\x00EHLO client.test\r\nAUTH PLAIN " + plain(anyUser, anyPass) + "\r\n" +
		"MAIL FROM:<>\r\nRCPT TO:<a@[127.0.0.1]>\r\nRCPT TO:<\"q u\"@two.test>\r\nDATA\r\n.\r\n",
	"\x01EHLO client.test\r\nAUTH PLAIN x\r\nMAIL FROM:<a@example.com>\r\nSTARTTLS\r\nplaintext after starttls\r\n",
	"\x01HELO x\r\nEHLO bad!name\r\nEHLO\r\n\x00\xff\r\nBDAT x\r\nDATA\r\n" + strings.Repeat("A", 5000) + "\r\nQUIT\r\n",
	"\x00EHLO a\r\nAUTH PLAIN\r\n*\r\nAUTH XOAUTH2\r\nAUTH LOGIN " + b64(appUser) + "\r\n" + b64("nope") + "\r\n",
	"\x00ehlo client.test\r\nauth plain " + plain(appUser, appPass) + "\r\n" +
		"mail from:<a@example.com> SIZE=999999999\r\nmail from:<a@example.com> REQUIRETLS\r\n" +
		"rcpt to:<x@one.test>\r\nbdat 5\r\n12345bdat 0 last\r\n",
}

// FuzzSession: random command streams against the real server never make
// it panic, and everything it answers is a well-formed SMTP reply stream
// (RFC 5321 §4.2): 3-digit codes 2xx-5xx, "-" continuations with the same
// code, CRLF-terminated lines, and on every 4xx/5xx an enhanced status code
// (RFC 3463) of the same class; the server closes after the client's EOF.
func FuzzSession(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	srv, clientConf, pw := fuzzServer(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 || len(in) > 64<<10 {
			return
		}
		implicit := in[0]%2 == 0
		ln := lnStartTLS
		if implicit {
			ln = lnImplicit
		}
		out, cut, err := converse(srv.Addrs()[ln].String(), implicit, clientConf, in[1:])
		if err != nil {
			t.Fatalf("conversation: %v\nreplies so far: %q", err, out)
		}
		if msg := checkReplies(out, cut); msg != "" {
			t.Fatalf("%s\nreplies: %q", msg, out)
		}
		if p := pw.seen.Load(); p != nil {
			t.Fatalf("server panicked: %s", *p)
		}
	})
}

// converse sends in, half-closes, and returns all the server wrote until
// it closed the connection. cut reports a reset: a server that closes
// after a fatal reply (421, too many errors) with client input still
// unread makes the kernel reset the connection, and the client may lose
// the tail of what was sent to it.
func converse(addr string, implicit bool, conf *tls.Config, in []byte) (out []byte, cut bool, err error) {
	d := &net.Dialer{Timeout: fuzzSessionTimeout}
	raw, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, false, err
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(fuzzSessionTimeout))
	var c interface {
		io.ReadWriter
		CloseWrite() error
	} = raw.(*net.TCPConn)
	if implicit {
		tc := tls.Client(raw, conf)
		if err := tc.Handshake(); err != nil {
			return nil, false, err
		}
		c = tc
	}
	type result struct {
		b   []byte
		err error
	}
	done := make(chan result)
	go func() {
		b, err := io.ReadAll(c)
		done <- result{b, err}
	}()
	_, werr := c.Write(in)
	if werr == nil {
		werr = c.CloseWrite()
	}
	r := <-done
	var ne net.Error
	cut = errors.Is(r.err, syscall.ECONNRESET)
	switch {
	case errors.As(r.err, &ne) && ne.Timeout():
		return r.b, cut, errors.New("server neither answered nor closed after the client's EOF")
	case r.err != nil && !isClosedErr(r.err):
		return r.b, cut, r.err
	case werr != nil && !isClosedErr(werr):
		return r.b, cut, werr
	}
	return r.b, cut, nil
}

// isClosedErr: the server closed first (after a fatal reply), which a
// client writing or half-closing may see in several ways.
func isClosedErr(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ENOTCONN)
}

// checkReplies validates a reply stream; "" means it is well formed. A cut
// stream is checked up to its last complete line.
func checkReplies(out []byte, cut bool) string {
	if cut {
		out = out[:bytes.LastIndex(out, []byte("\r\n"))+2]
		if len(out) == 1 { // no complete line
			out = nil
		}
	}
	if len(out) == 0 {
		return "" // closed without a word (e.g. a failed STARTTLS handshake)
	}
	if !bytes.HasSuffix(out, []byte("\r\n")) {
		return "reply stream does not end with CRLF"
	}
	cont := ""
	for _, line := range strings.Split(string(out[:len(out)-2]), "\r\n") {
		if msg := checkReplyLine(line, cont); msg != "" {
			return msg + ": " + strconv.Quote(line)
		}
		cont = ""
		if len(line) > 3 && line[3] == '-' {
			cont = line[:3]
		}
	}
	if cont != "" && !cut {
		return "reply stream ends inside a multi-line reply"
	}
	return ""
}

// checkReplyLine checks one line; cont is the code of the multi-line reply
// it continues ("" for none).
func checkReplyLine(line, cont string) string {
	if len(line) < 3 || line[0] < '2' || line[0] > '5' || line[1] < '0' || line[1] > '9' ||
		line[2] < '0' || line[2] > '9' {
		return "not a 3-digit reply code"
	}
	if cont != "" && line[:3] != cont {
		return "continuation with another code"
	}
	if len(line) > 3 && line[3] != ' ' && line[3] != '-' {
		return "code not followed by space or hyphen"
	}
	if strings.ContainsFunc(line, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return "control character in a reply line"
	}
	if line[0] < '4' || len(line) > 3 && line[3] == '-' {
		return ""
	}
	f := strings.Fields(line[min(4, len(line)):])
	if len(f) == 0 || !validEnhanced(f[0], line[0]) {
		return "4xx/5xx reply without a matching enhanced status code"
	}
	return ""
}

// validEnhanced checks class.subject.detail (RFC 3463 §2) with the class of
// the basic code.
func validEnhanced(s string, class byte) bool {
	p := strings.Split(s, ".")
	if len(p) != 3 || p[0] != string(class) {
		return false
	}
	for _, n := range p[1:] {
		if v, err := strconv.Atoi(n); err != nil || v < 0 || v > 999 || len(n) > 3 {
			return false
		}
	}
	return true
}
