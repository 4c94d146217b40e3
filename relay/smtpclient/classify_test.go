package smtpclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/emersion/go-smtp"
	"github.com/google/go-cmp/cmp"
)

var classifyCases = []struct {
	name string
	err  error
	want Verdict
}{
	{"nil", nil, Verdict{Reply: Reply{Code: 250, Enh: "2.0.0", Text: "OK"}}},
	{"550 user unknown", &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"},
		Verdict{Reply: Reply{Code: 550, Enh: "5.1.1", Text: "no such user"}}},
	{"451 multiline", &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "busy\nreally busy"},
		Verdict{Reply: Reply{Code: 451, Enh: "4.3.0", Text: "busy\nreally busy"}}},
	{"421 closing: next host", &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "bye"},
		Verdict{Reply: Reply{Code: 421, Enh: "4.4.2", Text: "bye"}, NextHost: true}},
	{"no enhanced code", &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCodeNotSet, Message: "no"},
		Verdict{Reply: Reply{Code: 554, Enh: "5.0.0", Text: "no"}}},
	{"enhanced code on last line only", &smtp.SMTPError{Code: 452, Message: "first\n4.2.2 mailbox full"},
		Verdict{Reply: Reply{Code: 452, Enh: "4.2.2", Text: "first\nmailbox full"}}},
	{"inconsistent class", &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{5, 2, 1}, Message: "x"},
		Verdict{Reply: Reply{Code: 450, Enh: "4.2.1", Text: "x"}}},
	{"unexpected 3xx", &smtp.SMTPError{Code: 354, Message: "go ahead"},
		Verdict{Reply: Reply{Code: 451, Enh: "4.5.0", Text: "unexpected reply 354 go ahead"}}},
	{"NXDOMAIN", &DNSError{Name: "x.test", Type: "MX", Kind: DNSNotFound},
		Verdict{Reply: withCause(replyNXDomain, "MX lookup of x.test: NXDOMAIN")}},
	{"SERVFAIL", &DNSError{Name: "x.test", Type: "MX", Kind: DNSTemporary, Err: errors.New("SERVFAIL from 127.0.0.1:53")},
		Verdict{Reply: withCause(replyDNSTemp, "MX lookup of x.test: SERVFAIL from 127.0.0.1:53")}},
	{"null MX", newError(replyNullMX, false, nil), Verdict{Reply: replyNullMX}},
	{"REQUIRETLS", newError(replyRequireTLS, true, nil), Verdict{Reply: replyRequireTLS, NextHost: true}},
	{"refused", &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)},
		Verdict{Reply: withCause(replyConnRefused, "dial tcp: connect: connection refused"), NextHost: true}},
	{"reset", fmt.Errorf("write: %w", syscall.ECONNRESET),
		Verdict{Reply: withCause(replyConnLost, "write: connection reset by peer"), NextHost: true}},
	{"EOF", io.EOF, Verdict{Reply: withCause(replyConnLost, "EOF"), NextHost: true}},
	{"read timeout", fmt.Errorf("read: %w", os.ErrDeadlineExceeded),
		Verdict{Reply: withCause(replyTimeout, "read: i/o timeout"), NextHost: true}},
	{"deadline", context.DeadlineExceeded,
		Verdict{Reply: withCause(replyTimeout, "context deadline exceeded"), NextHost: true}},
	{"unknown CA", &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}},
		Verdict{
			Reply: withCause(replyTLSFailed,
				"tls: failed to verify certificate: x509: certificate signed by unknown authority"),
			NextHost: true,
		}},
	{"TLS alert", fmt.Errorf("handshake: %w", tls.AlertError(40)),
		Verdict{Reply: withCause(replyTLSFailed, "handshake: tls: handshake failure"), NextHost: true}},
	{"shutdown", context.Canceled, Verdict{Reply: ReplyShutdown}},
	{"anything else", errors.New("boom"), Verdict{Reply: withCause(ReplyLocal, "boom"), NextHost: true}},
}

// TestClassify checks every failure class: code, enhanced code, kept text,
// temporary/permanent and whether the next host is tried.
func TestClassify(t *testing.T) {
	for _, tc := range classifyCases {
		t.Run(tc.name, func(t *testing.T) {
			got := Classify(tc.err)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Fatalf("Classify(%v) (-want +got):\n%s", tc.err, diff)
			}
			if got.Temporary() == got.Permanent() && !got.OK() {
				t.Fatalf("%v is neither temporary nor permanent", got)
			}
		})
	}
}

func BenchmarkClassify(b *testing.B) {
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		_ = Classify(classifyCases[i%len(classifyCases)].err)
	}
}

// Equal preferences are shuffled, different ones kept in order.
func TestOrderMX(t *testing.T) {
	in := []MX{{Host: "c", Pref: 20}, {Host: "a", Pref: 10}, {Host: "b", Pref: 10}, {Host: "d", Pref: 30}}
	firsts := map[string]int{}
	for i := 0; i < 200; i++ {
		out := orderMX(in)
		if out[2].Host != "c" || out[3].Host != "d" {
			t.Fatalf("order %v", out)
		}
		firsts[out[0].Host]++
	}
	if firsts["a"] == 0 || firsts["b"] == 0 {
		t.Fatalf("equal preferences not shuffled: %v", firsts)
	}
}

// 8-bit single-part bodies become quoted-printable; 8-bit headers and
// multipart bodies cannot be converted.
func TestToSevenBit(t *testing.T) {
	out, ok := toSevenBit([]byte("Subject: x\r\nContent-Transfer-Encoding: 8bit\r\n\r\ncaf\xc3\xa9\r\n"))
	want := "Subject: x\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9\r\n"
	if !ok || string(out) != want {
		t.Fatalf("got %q, %v", out, ok)
	}
	for _, in := range []string{"Subject: caf\xc3\xa9\r\n\r\nx\r\n",
		"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n\xc3\xa9\r\n--b--\r\n",
		"Content-Transfer-Encoding: binary\r\n\r\n\xc3\r\n"} {
		if _, ok := toSevenBit([]byte(in)); ok {
			t.Errorf("converted %q", in)
		}
	}
}
