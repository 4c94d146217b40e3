package submit

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/relaytest"
)

// dial connects go-smtp's client to a listener (STARTTLS or implicit TLS).
func (h *harness) dial(listener int) *smtp.Client {
	h.t.Helper()
	var c *smtp.Client
	var err error
	if h.cfg.Submission.Listeners[listener].TLS == "implicit" {
		c, err = smtp.DialTLS(h.addr(listener), h.client)
	} else {
		c, err = smtp.DialStartTLS(h.addr(listener), h.client)
	}
	if err != nil {
		h.t.Fatalf("dial %s: %v", h.addr(listener), err)
	}
	c.CommandTimeout, c.SubmissionTimeout = testTimeout, testTimeout
	h.t.Cleanup(func() { c.Close() })
	return c
}

func saslClient(mech, user, pass string) sasl.Client {
	if mech == "LOGIN" {
		return sasl.NewLoginClient(user, pass)
	}
	return sasl.NewPlainClient("", user, pass)
}

// send runs one transaction and returns the queue id from the 250 reply.
func send(
	t testing.TB, c *smtp.Client, from string, rcpts []string, mo *smtp.MailOptions, ro *smtp.RcptOptions, msg []byte,
) string {
	t.Helper()
	if err := c.Mail(from, mo); err != nil {
		t.Fatalf("MAIL: %v", err)
	}
	for _, r := range rcpts {
		if err := c.Rcpt(r, ro); err != nil {
			t.Fatalf("RCPT %s: %v", r, err)
		}
	}
	w, err := c.Data()
	if err != nil {
		t.Fatalf("DATA: %v", err)
	}
	if _, err := w.Write(msg); err != nil {
		t.Fatalf("DATA write: %v", err)
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		t.Fatalf("end of DATA: %v", err)
	}
	id, ok := strings.CutPrefix(resp.StatusText, "2.0.0 OK: queued as ")
	if !ok || !queue.ValidID(id) {
		t.Fatalf("reply %q is not \"OK: queued as <ID>\"", resp.StatusText)
	}
	return id
}

// splitAdded checks that stored = added headers + original, and returns the
// added header section.
func splitAdded(t testing.TB, stored, original []byte) string {
	t.Helper()
	if !bytes.HasSuffix(stored, original) {
		t.Fatalf("stored body does not end with the submitted message byte for byte:\nstored: %.400q", stored)
	}
	added := string(stored[:len(stored)-len(original)])
	if !strings.HasPrefix(added,
		"Received: from client.test ([127.0.0.1])\r\n\tby relay.test (jetrelay) with ESMTPSA\r\n") {
		t.Fatalf("added header section does not start with Received:\n%s", added)
	}
	return added
}

// TestEndToEnd submits over the three listener kinds with AUTH PLAIN and
// LOGIN and finds envelope (with DSN and REQUIRETLS parameters) and body
// intact in JetStream.
func TestEndToEnd(t *testing.T) {
	t.Parallel()
	h := start(t, testConfig(t, func(c *config.Config) { c.Submission.ReceivedUser = true }))
	type sent struct {
		id  string
		msg []byte
	}
	var all []sent
	for _, ln := range []int{lnStartTLS, lnImplicit, lnStartTLS2} {
		for _, mech := range []string{"PLAIN", "LOGIN"} {
			c := h.dial(ln)
			if err := c.Hello("client.test"); err != nil {
				t.Fatal(err)
			}
			if err := c.Auth(saslClient(mech, appUser, appPass)); err != nil {
				t.Fatalf("listener %d AUTH %s: %v", ln, mech, err)
			}
			hdr := fmt.Sprintf("Message-ID: <m%d%s@example.com>\r\nDate: Mon, 02 Jan 2006 15:04:05 +0000\r\n", ln, mech)
			msg := []byte(message("billing@example.com", hdr) +
				"Caf\xc3\xa9 8-bit line\r\n..leading dot\r\n")
			mo := &smtp.MailOptions{Return: smtp.DSNReturnHeaders, EnvelopeID: "env-" + mech, RequireTLS: true}
			ro := &smtp.RcptOptions{Notify: []smtp.DSNNotify{smtp.DSNNotifySuccess, smtp.DSNNotifyFailure},
				OriginalRecipientType: smtp.DSNAddressTypeRFC822, OriginalRecipient: "orig@one.test"}
			id := send(t, c, "billing@EXAMPLE.com", []string{"rcpt@One.Test"}, mo, ro, msg)
			all = append(all, sent{id, msg})
			if err := c.Quit(); err != nil {
				t.Fatal(err)
			}
		}
	}
	entries := h.lease(len(all))
	for i, s := range all {
		e := entries[s.id+"/one.test"]
		if e == nil {
			t.Fatalf("message %d (%s) not in the queue", i, s.id)
		}
		checkEntry(t, e, s.id, s.msg)
	}
	if got := len(h.logs.events("accepted")); got != len(all) {
		t.Errorf("%d event=accepted lines, want %d", got, len(all))
	}
	for _, ev := range h.logs.events("accepted") {
		for _, k := range []string{
			"queue_id", "msg_id", "user", "mail_from", "rcpt_count", "size", "tls", "remote_addr", "dkim",
		} {
			if _, ok := ev[k]; !ok {
				t.Errorf("accepted event lacks %s: %v", k, ev)
			}
		}
	}
}

// checkEntry compares one end-to-end entry with what was sent: envelope
// with DSN and REQUIRETLS parameters, body byte for byte after Received.
func checkEntry(t *testing.T, e *queue.Entry, id string, msg []byte) {
	t.Helper()
	want := &queue.Envelope{ID: id, MsgID: e.Env.MsgID, From: "billing@example.com", Domain: "one.test",
		Rcpts: []queue.Recipient{
			{Addr: "rcpt@one.test", Notify: []string{"SUCCESS", "FAILURE"}, ORCPT: "rfc822;orig@one.test"},
		},
		User: appUser, Ret: "HDRS", EnvID: e.Env.EnvID, RequireTLS: true, Body8Bit: true, Size: e.Env.Size}
	if diff := cmp.Diff(want, e.Env, cmpopts.IgnoreFields(queue.Envelope{}, "Arrival")); diff != "" {
		t.Errorf("%s envelope (-want +got):\n%s", id, diff)
	}
	if !strings.HasPrefix(e.Env.EnvID, "env-") || !strings.HasPrefix(e.Env.MsgID, "<m") {
		t.Errorf("ENVID %q / Message-ID %q not kept", e.Env.EnvID, e.Env.MsgID)
	}
	if time.Since(e.Env.Arrival) > 10*time.Minute {
		t.Errorf("arrival %v", e.Env.Arrival)
	}
	b := body(t, e)
	// The client dot-stuffs "..leading dot"; the server unstuffs it: the
	// stored body is what the client meant, plus Received only.
	added := splitAdded(t, b, msg)
	if strings.Contains(added, "Message-ID:") || strings.Contains(added, "\r\nDate:") {
		t.Errorf("Message-ID/Date added although present:\n%s", added)
	}
	for _, part := range []string{
		"(version=TLS1.3 cipher=", "(authenticated user app)", "id " + id, "for <rcpt@one.test>;",
	} {
		if !strings.Contains(added, part) {
			t.Errorf("Received lacks %q:\n%s", part, added)
		}
	}
	if int64(len(b)) != e.Env.Size {
		t.Errorf("envelope size %d, body %d", e.Env.Size, len(b))
	}
}

// TestLargeMessage: a 20 MiB message is stored (as chunks) and read back
// byte for byte; Message-ID and Date are added when missing (RFC 6409 §8).
func TestLargeMessage(t *testing.T) {
	t.Parallel()
	h := start(t, testConfig(t))
	var b bytes.Buffer
	b.WriteString(message("a@example.com", ""))
	line := strings.Repeat("0123456789abcdef", 60) + "\r\n"
	for b.Len() < 20<<20 {
		b.WriteString(line)
	}
	msg := b.Bytes()
	c := h.dial(lnImplicit)
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Auth(saslClient("PLAIN", appUser, appPass)); err != nil {
		t.Fatal(err)
	}
	id := send(t, c, "a@example.com", []string{"x@one.test"}, nil, nil, msg)
	e := h.lease(1)[id+"/one.test"]
	if e == nil {
		t.Fatal("entry missing")
	}
	added := splitAdded(t, body(t, e), msg)
	if !strings.Contains(added, "\r\nMessage-ID: <"+id+"@relay.test>\r\n") || !strings.Contains(added, "\r\nDate: ") {
		t.Errorf("Message-ID/Date not added:\n%s", added)
	}
	if e.Env.MsgID != "<"+id+"@relay.test>" {
		t.Errorf("envelope msg_id %q", e.Env.MsgID)
	}
}

// TestMultiDomain: one entry per recipient domain, domains lowercased,
// all sharing the queue id and the body.
func TestMultiDomain(t *testing.T) {
	t.Parallel()
	h := start(t, testConfig(t))
	c := h.dial(lnStartTLS)
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Auth(saslClient("PLAIN", appUser, appPass)); err != nil {
		t.Fatal(err)
	}
	msg := []byte(message("a@example.com", ""))
	rcpts := []string{"a@one.test", "b@two.test", "C@ONE.test", "d@three.test", "a@one.test"}
	id := send(t, c, "a@example.com", rcpts, nil, nil, msg)
	entries := h.lease(3)
	want := map[string][]string{
		"one.test": {"a@one.test", "C@one.test"}, "two.test": {"b@two.test"}, "three.test": {"d@three.test"},
	}
	for dom, rcpts := range want {
		e := entries[id+"/"+dom]
		if e == nil {
			t.Fatalf("no entry for %s", dom)
		}
		var got []string
		for _, r := range e.Env.Rcpts {
			got = append(got, r.Addr)
		}
		if diff := cmp.Diff(rcpts, got); diff != "" {
			t.Errorf("%s recipients (-want +got):\n%s", dom, diff)
		}
		added := splitAdded(t, body(t, e), msg)
		if strings.Contains(added, "\tfor <") {
			t.Errorf("Received names a recipient of a multi-recipient message:\n%s", added)
		}
		if strings.Contains(added, "authenticated user") || strings.Contains(added, appUser) {
			t.Errorf("Received names the login without submission.received_user:\n%s", added)
		}
	}
}

// TestAuthOnlyInsideTLS: no AUTH before STARTTLS, AUTH and no STARTTLS after.
func TestAuthOnlyInsideTLS(t *testing.T) {
	t.Parallel()
	h := start(t, testConfig(t))
	c := h.dialRaw(lnStartTLS)
	r := c.expect("EHLO client.test", 250, "")
	caps := strings.Join(r.Lines, "\n")
	if strings.Contains(caps, "AUTH") || !strings.Contains(caps, "STARTTLS") {
		t.Fatalf("plaintext EHLO: %s", caps)
	}
	if r := c.cmd("AUTH PLAIN " + plain(appUser, appPass)); r.Code < 500 {
		t.Fatalf("AUTH before STARTTLS: %v", r)
	}
	c.expect("MAIL FROM:<a@example.com>", 530, "5.7.0")
	c.starttls(h.client)
	r = c.expect("EHLO client.test", 250, "")
	caps = strings.Join(r.Lines, "\n")
	for _, want := range []string{"AUTH PLAIN LOGIN", "PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES",
		"CHUNKING", "DSN", "REQUIRETLS", fmt.Sprintf("SIZE %d", h.cfg.Submission.MaxMessageBytes)} {
		if !strings.Contains(caps, want) {
			t.Errorf("EHLO inside TLS lacks %q:\n%s", want, caps)
		}
	}
	if strings.Contains(caps, "STARTTLS") {
		t.Errorf("STARTTLS offered inside TLS:\n%s", caps)
	}
	c.expect("MAIL FROM:<a@example.com>", 530, "5.7.0")
	c.expect("AUTH PLAIN "+plain(appUser, appPass), 235, "2.0.0")
	c.expect("MAIL FROM:<a@example.com>", 250, "")
}

// TestSmuggling: only CRLF.CRLF ends DATA (go-smtp's reader); "\n.\n" and
// "\n.\r\n" inside the data are content, stored with CRLF line endings, so
// no second message is smuggled in (CVE-2023-51766 class).
func TestSmuggling(t *testing.T) {
	t.Parallel()
	h := start(t, testConfig(t))
	c := h.login(lnImplicit, appUser, appPass)
	c.expect("MAIL FROM:<a@example.com>", 250, "")
	c.expect("RCPT TO:<x@one.test>", 250, "")
	c.expect("DATA", 354, "")
	c.send(message("a@example.com", "") +
		"first\n.\nMAIL FROM:<evil@example.com>\r\nsecond\r\n.\nthird\n.\r\nRCPT TO:<y@two.test>\r\n.\r\n")
	r := c.read()
	if r.Code != 250 {
		t.Fatalf("end of DATA: %v", r)
	}
	c.expect("NOOP", 250, "")
	id := strings.TrimPrefix(r.Text, "OK: queued as ")
	b := body(t, h.lease(1)[id+"/one.test"])
	// "\r\n.\n" is a dot-stuffed line: the leading dot goes (RFC 5321 §4.5.2).
	want := "Hello.\r\nfirst\r\n.\r\nMAIL FROM:<evil@example.com>\r\nsecond\r\n\r\nthird\r\n.\r\nRCPT TO:<y@two.test>\r\n"
	if !bytes.HasSuffix(b, []byte(want)) {
		t.Fatalf("stored body tail %q, want %q", b[max(0, len(b)-len(want)-20):], want)
	}
	if n := h.stored(); n != 1 {
		t.Fatalf("%d messages stored, want 1", n)
	}
}

// TestBDAT: CHUNKING (RFC 3030) works, including a chunk split mid-line
// and a message without a final CRLF.
func TestBDAT(t *testing.T) {
	t.Parallel()
	h := start(t, testConfig(t))
	c := h.login(lnImplicit, appUser, appPass)
	c.expect("MAIL FROM:<a@example.com>", 250, "")
	c.expect("RCPT TO:<x@one.test>", 250, "")
	msg := message("a@example.com", "") + "tail without CRLF"
	half := len(msg) / 2
	c.send(fmt.Sprintf("BDAT %d\r\n%s", half, msg[:half]))
	if r := c.read(); r.Code != 250 {
		t.Fatalf("BDAT chunk: %v", r)
	}
	c.send(fmt.Sprintf("BDAT %d LAST\r\n%s", len(msg)-half, msg[half:]))
	r := c.read()
	if r.Code != 250 || r.Enh != "2.0.0" {
		t.Fatalf("BDAT LAST: %v", r)
	}
	id := strings.TrimPrefix(r.Text, "OK: queued as ")
	splitAdded(t, body(t, h.lease(1)[id+"/one.test"]), []byte(msg+"\r\n"))
}

// TestSTARTTLSFailureDisconnects: a failed handshake ends the connection;
// it never carries on in plaintext.
func TestSTARTTLSFailureDisconnects(t *testing.T) {
	t.Parallel()
	h := start(t, testConfig(t))
	c := h.dialRaw(lnStartTLS)
	c.expect("EHLO client.test", 250, "")
	c.expect("STARTTLS", 220, "")
	c.send("this is not a TLS ClientHello\r\n\r\n")
	_ = c.conn.SetReadDeadline(time.Now().Add(testTimeout))
	rest, err := io.ReadAll(c.conn)
	if err != nil && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("connection not closed: %v", err)
	}
	if bytes.Contains(rest, []byte("550")) || bytes.Contains(rest, []byte("250")) {
		t.Fatalf("server carried on in plaintext: %q", rest)
	}
	relaytest.Eventually(t, "connection slot released", func() bool { return h.srv.conns.open() == 0 })
	_ = tls.VersionTLS13
}
