package smtpclient_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/jetrelay/jetrelay/relay/relaytest"
	"github.com/jetrelay/jetrelay/relay/smtpclient"
)

// Extensions against fake servers: DSN parameters (RFC 3461) pass on when
// the server offers DSN and the connection says so; an 8-bit body to a
// server without 8BITMIME arrives as quoted-printable (RFC 6152 §3); an
// SMTPUTF8 message to a server without SMTPUTF8 fails 553 5.6.7 without being
// sent (RFC 6531 §3.4).
func TestExtensions(t *testing.T) {
	t.Parallel()
	dsn := relaytest.FakeMX(t, relaytest.DSN())
	plain := relaytest.FakeMX(t, relaytest.No8BitMIME(), relaytest.Port(dsn.Port))
	z := newZone()
	z.add("dsn.test", dsn.IP)
	z.add("plain.test", plain.IP)
	c := newClient(t, z, dsn.Port)
	notify := func(m *smtpclient.Message) {
		m.Rcpts[0].Notify, m.Rcpts[0].ORCPT = []string{"SUCCESS", "FAILURE"}, "rfc822;orig@dsn.test"
		m.Ret, m.EnvID = "HDRS", "env-1"
	}
	a := deliver(t, c, "x@dsn.test", notify)
	wantReply(t, a, 250, "2.0.0")
	got := dsn.Messages()[0]
	ro := got.RcptOpts["x@dsn.test"]
	if !a.Conn.DSN || len(ro.Notify) != 2 || ro.OriginalRecipient != "orig@dsn.test" ||
		got.MailOpts.EnvelopeID != "env-1" || got.MailOpts.Return != "HDRS" {
		t.Fatalf("DSN parameters not passed on (conn DSN %v): %+v %+v", a.Conn.DSN, got.MailOpts, ro)
	}
	if a = deliver(t, c, "x@plain.test", notify); a.Conn.DSN {
		t.Fatal("a server without DSN reported as offering it")
	}
	wantReply(t, a, 250, "2.0.0")

	body8 := []byte("From: a@sender.test\r\nSubject: cafe!\r\n\r\ncaf\xc3\xa9\r\n") // 8-bit body, 7-bit header
	wantReply(t, deliver(t, c, "y@plain.test", func(m *smtpclient.Message) { m.Body, m.Body8Bit = body8, true }),
		250, "2.0.0")
	for _, msg := range plain.Messages() {
		if msg.Rcpts[0] == "y@plain.test" && (bytes.ContainsFunc(msg.Body, func(r rune) bool { return r >= 0x80 }) ||
			!strings.Contains(string(msg.Body), "Content-Transfer-Encoding: quoted-printable") ||
			!strings.Contains(string(msg.Body), "caf=C3=A9")) {
			t.Fatalf("8-bit body sent as is:\n%s", msg.Body)
		}
	}
	if plain.Received("y@plain.test") != 1 {
		t.Fatal("8-bit message not delivered")
	}
	a = deliver(t, c, "u@plain.test", func(m *smtpclient.Message) { m.SMTPUTF8 = true })
	wantReply(t, a, 553, "5.6.7")
	if a.Replies[0].Temporary() || plain.Received("u@plain.test") != 0 {
		t.Fatalf("SMTPUTF8 to a server without it: %+v, received %d", a.Replies, plain.Received("u@plain.test"))
	}
}

// A connection dropped in the middle of DATA settles nothing for good: the
// recipient gets a temporary 451 4.4.2 and the server kept no message.
func TestDroppedMidDataDefers(t *testing.T) {
	t.Parallel()
	m := relaytest.FakeMX(t)
	m.DropData(1)
	z := newZone()
	z.add("drop.test", m.IP)
	a := deliver(t, newClient(t, z, m.Port), "x@drop.test")
	wantReply(t, a, 451, "4.4.2")
	if a.Session != nil || m.Received("x@drop.test") != 0 {
		t.Fatalf("session kept %v, received %d", a.Session != nil, m.Received("x@drop.test"))
	}
}
