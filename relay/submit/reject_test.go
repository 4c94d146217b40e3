package submit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/relaytest"
)

// rejection is one refusal the submission server must answer exactly.
type rejection struct {
	name string
	mod  func(*config.Config)
	opts harnessOpts
	code int
	enh  string
	text string // the reply text contains this ("" = not checked)
	run  func(t *testing.T, h *harness) smtpReply
}

// inTx logs in on the implicit-TLS listener and opens a transaction.
func inTx(h *harness, user, pass, from string, rcpts ...string) *rawClient {
	c := h.login(lnImplicit, user, pass)
	c.expect("MAIL FROM:<"+from+">", 250, "")
	for _, r := range rcpts {
		c.expect("RCPT TO:<"+r+">", 250, "")
	}
	return c
}

// data sends a message with DATA and returns the final reply.
func data(h *harness, msg string) smtpReply {
	c := inTx(h, appUser, appPass, "a@example.com", "x@one.test")
	c.expect("DATA", 354, "")
	c.send(msg + ".\r\n")
	return c.read()
}

func mailFrom(addr string) func(*testing.T, *harness) smtpReply {
	return func(t *testing.T, h *harness) smtpReply {
		return h.login(lnImplicit, appUser, appPass).cmd("MAIL FROM:<" + addr + ">")
	}
}

func rcptTo(addr string) func(*testing.T, *harness) smtpReply {
	return func(t *testing.T, h *harness) smtpReply {
		return inTx(h, appUser, appPass, "a@example.com").cmd("RCPT TO:<" + addr + ">")
	}
}

// mapSuppressor is a suppression list in a map (the interface's consumer-side contract).
type mapSuppressor map[string]time.Time

func (m mapSuppressor) Suppressed(_ context.Context, addr string) (time.Time, bool, error) {
	t, ok := m[strings.ToLower(addr)]
	return t, ok, nil
}

type failingSigner struct{}

func (failingSigner) Sign([]byte) ([]byte, string, error) {
	return nil, "", errors.New("key unreadable")
}

func limits(f func(s *config.Submission)) func(*config.Config) {
	return func(c *config.Config) { f(&c.Submission) }
}

func rejections() []rejection {
	rs := append(authRejections(), senderRejections()...)
	rs = append(rs, contentRejections()...)
	rs = append(rs, limitRejections()...)
	rs = append(rs, protocolRejections()...)
	for _, a := range []string{"a@exa_mple.com", "a@-example.com", "a@example..com", "a\x01b@example.com",
		"a\rb@example.com", "a\x00b@example.com", "a@exam\x7fple.com", "a@[1.2.3]", strings.Repeat("a", 65) + "@example.com",
		"alice.sender.test", "@", "alice@", "a b@example.com"} { // the last four: go-smtp's path parser refuses them
		rs = append(rs, rejection{name: fmt.Sprintf("MAIL syntax %q", a), code: 501, enh: "5.1.7", run: mailFrom(a)})
	}
	for _, a := range []string{"x@one_test", "x@localhost", "x\x00@one.test", "x@one.test\r", "x@one.test\x1b",
		"bob.example", "", "bob@", "b ob@one.test"} { // the last four: go-smtp's path parser refuses them
		rs = append(rs, rejection{name: fmt.Sprintf("RCPT syntax %q", a), code: 501, enh: "5.1.3", run: rcptTo(a)})
	}
	return rs
}

// authRejections: AUTH, its failure tracking, and EHLO.
func authRejections() []rejection {
	return []rejection{
		{name: "MAIL without AUTH", code: 530, enh: "5.7.0", run: func(t *testing.T, h *harness) smtpReply {
			c := h.dialRaw(lnImplicit)
			c.expect("EHLO client.test", 250, "")
			return c.cmd("MAIL FROM:<a@example.com>")
		}},
		{name: "bad password", code: 535, enh: "5.7.8", run: auth(appUser, "wrong")},
		{name: "unknown user", code: 535, enh: "5.7.8", run: auth("nobody", appPass)},
		{name: "bad password after a cached success", code: 535, enh: "5.7.8", run: func(t *testing.T, h *harness) smtpReply {
			h.login(lnImplicit, appUser, appPass) // the right password is now in the credential cache
			c := h.dialRaw(lnImplicit)
			c.expect("EHLO client.test", 250, "")
			return c.cmd("AUTH PLAIN " + plain(appUser, appPass+"x"))
		}},
		{name: "authzid of another user", code: 535, enh: "5.7.8", run: func(t *testing.T, h *harness) smtpReply {
			c := h.dialRaw(lnImplicit)
			c.expect("EHLO client.test", 250, "")
			return c.cmd("AUTH PLAIN " + b64("dev\x00app\x00"+appPass))
		}},
		{name: "AUTH while banned", code: 454, enh: "4.7.0",
			mod: limits(func(s *config.Submission) { s.AuthFailures.Max = 3 }),
			run: func(t *testing.T, h *harness) smtpReply {
				c := h.dialRaw(lnImplicit)
				c.expect("EHLO client.test", 250, "")
				for range 3 {
					c.expect("AUTH PLAIN "+plain(appUser, "wrong"), 535, "5.7.8")
				}
				return c.cmd("AUTH PLAIN " + plain(appUser, appPass)) // right password, still banned
			}},
		{name: "connect while banned", code: 421, enh: "4.7.0",
			mod: limits(func(s *config.Submission) { s.AuthFailures.Max = 2 }),
			run: func(t *testing.T, h *harness) smtpReply {
				c := h.dialRaw(lnStartTLS2)
				c.expect("EHLO client.test", 250, "")
				c.starttls(h.client)
				c.expect("EHLO client.test", 250, "")
				c.expect("AUTH PLAIN "+plain(appUser, "wrong"), 535, "5.7.8")
				c.expect("AUTH PLAIN "+plain(appUser, "wrong"), 535, "5.7.8")
				_, g := h.dialGreeting(lnImplicit)
				return g
			}},
		{name: "bad EHLO", code: 501, enh: "5.5.4", run: ehlo("bad!name")},
		{name: "EHLO with control character", code: 501, enh: "5.5.4", run: ehlo("a\x01b.test")},
		{name: "EHLO bad address literal", code: 501, enh: "5.5.4", run: ehlo("[300.1.1.1]")},
		{name: "bad EHLO after a good one", code: 501, enh: "5.5.4", run: func(t *testing.T, h *harness) smtpReply {
			c := h.login(lnImplicit, appUser, appPass)
			c.expect("EHLO bad!name", 250, "") // go-smtp answers a second EHLO itself
			return c.cmd("MAIL FROM:<a@example.com>")
		}},
	}
}

// senderRejections: sender policy, recipients, rate.
func senderRejections() []rejection {
	return []rejection{
		{name: "MAIL FROM other domain", code: 553, enh: "5.7.1", run: mailFrom("a@other.test")},
		{name: "MAIL FROM subdomain", code: 553, enh: "5.7.1", run: mailFrom("a@sub.example.com")},
		{name: "MAIL FROM other address of allowed address's domain", code: 553, enh: "5.7.1",
			run: mailFrom("bob@example.org")},
		{name: "null sender", code: 553, enh: "5.7.1", run: mailFrom("")},
		{name: "8-bit sender without SMTPUTF8", code: 553, enh: "5.6.7", run: mailFrom("j\xc3\xb6rg@example.com")},
		{name: "8-bit recipient without SMTPUTF8", code: 553, enh: "5.6.7", run: rcptTo("j\xc3\xb6rg@one.test")},
		{name: "rate", code: 451, enh: "4.7.1", run: func(t *testing.T, h *harness) smtpReply {
			c := h.login(lnImplicit, slowUser, slowPass)
			for range 2 { // the bucket holds 2
				c.expect("MAIL FROM:<a@example.com>", 250, "")
				c.expect("RSET", 250, "")
			}
			return c.cmd("MAIL FROM:<a@example.com>")
		}},
		{name: "suppressed recipient", code: 550, enh: "5.1.1",
			opts: harnessOpts{suppressor: mapSuppressor{"gone@one.test": time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)}},
			run: func(t *testing.T, h *harness) smtpReply {
				r := rcptTo("Gone@One.Test")(t, h)
				if !strings.Contains(r.Text, "hard bounce on 2026-03-01") {
					t.Errorf("reply %v lacks the date", r)
				}
				return r
			}},
		{name: "address literal recipient", code: 550, enh: "5.1.2", run: rcptTo("x@[127.0.0.1]")},
	}
}

// contentRejections: the message itself.
func contentRejections() []rejection {
	return []rejection{
		{name: "header From not allowed", code: 550, enh: "5.7.1", run: func(t *testing.T, h *harness) smtpReply {
			return data(h, message("evil@other.test", ""))
		}},
		{name: "header From second address not allowed", code: 550, enh: "5.7.1",
			run: func(t *testing.T, h *harness) smtpReply {
				return data(h, "From: a@example.com, b@bank.test\r\n\r\nx\r\n")
			}},
		{name: "no From", code: 550, enh: "5.6.0", run: func(t *testing.T, h *harness) smtpReply {
			return data(h, "Subject: x\r\n\r\nbody\r\n")
		}},
		{name: "two From fields", code: 550, enh: "5.6.0", run: func(t *testing.T, h *harness) smtpReply {
			return data(h, "From: a@example.com\r\nFrom: b@example.com\r\n\r\nbody\r\n")
		}},
		{name: "header line that is no field", code: 550, enh: "5.6.0", run: func(t *testing.T, h *harness) smtpReply {
			return data(h, "From: a@example.com\r\ngarbage\r\nFrom: evil@bank.test\r\n\r\nbody\r\n")
		}},
		{name: "signer fails", code: 451, enh: "4.3.0", opts: harnessOpts{signer: failingSigner{}},
			run: func(t *testing.T, h *harness) smtpReply { return data(h, message("a@example.com", "")) }},
		{name: "bare LF with bare_newlines reject", code: 550, enh: "5.6.0",
			mod: func(c *config.Config) { c.Submission.BareNewlines = "reject" },
			run: func(t *testing.T, h *harness) smtpReply { return data(h, message("a@example.com", "")+"bare\nLF\r\n") }},
		{name: "bare CR with bare_newlines reject", code: 550, enh: "5.6.0",
			mod: func(c *config.Config) { c.Submission.BareNewlines = "reject" },
			run: func(t *testing.T, h *harness) smtpReply { return data(h, message("a@example.com", "")+"bare\rCR\r\n") }},
		{name: "NUL in body", code: 550, enh: "5.6.0", run: func(t *testing.T, h *harness) smtpReply {
			return data(h, message("a@example.com", "")+"nul\x00byte\r\n")
		}},
		{name: "BDAT line too long", code: 554, enh: "5.6.0", run: func(t *testing.T, h *harness) smtpReply {
			c := inTx(h, appUser, appPass, "a@example.com", "x@one.test")
			msg := message("a@example.com", "") + strings.Repeat("y", 5000) + "\r\n"
			c.send(fmt.Sprintf("BDAT %d LAST\r\n%s", len(msg), msg))
			return c.read()
		}},
	}
}

// protocolRejections: syntax and sequence errors go-smtp answers itself
// (logged through Server.Rejected).
func protocolRejections() []rejection {
	return []rejection{
		{name: "unknown command", code: 500, enh: "5.5.2", run: func(t *testing.T, h *harness) smtpReply {
			return h.login(lnImplicit, appUser, appPass).cmd("XYZZ")
		}},
		{name: "RCPT before MAIL", code: 502, enh: "5.5.1", run: func(t *testing.T, h *harness) smtpReply {
			return h.login(lnImplicit, appUser, appPass).cmd("RCPT TO:<x@one.test>")
		}},
		{name: "DATA before RCPT", code: 502, enh: "5.5.1", run: func(t *testing.T, h *harness) smtpReply {
			c := h.login(lnImplicit, appUser, appPass)
			c.expect("MAIL FROM:<a@example.com>", 250, "")
			return c.cmd("DATA")
		}},
		{name: "MAIL without FROM:", code: 501, enh: "5.5.2", run: func(t *testing.T, h *harness) smtpReply {
			return h.login(lnImplicit, appUser, appPass).cmd("MAIL <a@example.com>")
		}},
		{name: "RCPT without TO:", code: 501, enh: "5.5.2", run: func(t *testing.T, h *harness) smtpReply {
			return inTx(h, appUser, appPass, "a@example.com").cmd("RCPT <x@one.test>")
		}},
		// Plaintext, so go-smtp's drain before the close goes through
		// trackedConn.CloseWrite: the reply and then EOF arrive despite the
		// unread input (no reset).
		{name: "command line too long, input unread", code: 500, enh: "5.5.2", run: func(t *testing.T, h *harness) smtpReply {
			c := h.dialRaw(lnStartTLS)
			c.expect("EHLO client.test", 250, "")
			c.send("NOOP " + strings.Repeat("x", h.cfg.Submission.MaxLineLength) + "\r\n" + strings.Repeat("NOOP\r\n", 4000))
			r := c.read()
			if _, err := c.readErr(); !errors.Is(err, io.EOF) {
				t.Errorf("after the reply: %v, want EOF (a reset can lose the reply)", err)
			}
			return r
		}},
		{name: "MAIL SIZE not a number", code: 501, enh: "5.5.4", run: func(t *testing.T, h *harness) smtpReply {
			return h.login(lnImplicit, appUser, appPass).cmd("MAIL FROM:<a@example.com> SIZE=big")
		}},
	}
}

// tooBigText is every size refusal's text with max_message_bytes 4096.
const tooBigText = "message exceeds the size limit of 4096 bytes"

// limitRejections: sizes, counts, connections.
func limitRejections() []rejection {
	return []rejection{
		{name: "SIZE over limit at MAIL", code: 552, enh: "5.3.4", text: tooBigText,
			mod: limits(func(s *config.Submission) { s.MaxMessageBytes = 4096 }),
			run: func(t *testing.T, h *harness) smtpReply {
				return h.login(lnImplicit, appUser, appPass).
					cmd(fmt.Sprintf("MAIL FROM:<a@example.com> SIZE=%d", h.cfg.Submission.MaxMessageBytes+1))
			}},
		{name: "data over limit", code: 552, enh: "5.3.4", text: tooBigText,
			mod: limits(func(s *config.Submission) { s.MaxMessageBytes = 4096 }),
			run: func(t *testing.T, h *harness) smtpReply {
				return data(h, message("a@example.com", "")+strings.Repeat("0123456789abcdef\r\n", 400))
			}},
		{name: "BDAT over limit", code: 552, enh: "5.3.4", text: tooBigText,
			mod: limits(func(s *config.Submission) { s.MaxMessageBytes = 4096 }),
			run: func(t *testing.T, h *harness) smtpReply {
				c := inTx(h, appUser, appPass, "a@example.com", "x@one.test")
				c.send("BDAT 5000 LAST\r\n" + strings.Repeat("x", 5000))
				return c.read()
			}},
		{name: "header section too large", code: 552, enh: "5.3.4",
			mod: limits(func(s *config.Submission) { s.MaxHeaderBytes = 2048 }),
			run: func(t *testing.T, h *harness) smtpReply {
				return data(h, message("a@example.com", strings.Repeat("X-Pad: 0123456789abcdef\r\n", 100)))
			}},
		{name: "too many recipients", code: 452, enh: "4.5.3",
			mod: limits(func(s *config.Submission) { s.MaxRecipients = 2 }),
			run: func(t *testing.T, h *harness) smtpReply {
				return inTx(h, appUser, appPass, "a@example.com", "a@one.test", "b@one.test").cmd("RCPT TO:<c@one.test>")
			}},
		{name: "max_connections", code: 421, enh: "4.7.0", mod: limits(func(s *config.Submission) { s.MaxConnections = 1 }),
			run: secondConnection},
		{name: "max_connections_per_ip", code: 421, enh: "4.7.0",
			mod: limits(func(s *config.Submission) { s.MaxConnectionsPerIP = 1 }),
			run: secondConnection},
		{name: "max_idle_commands", code: 421, enh: "4.7.0",
			mod: limits(func(s *config.Submission) { s.MaxIdleCommands = 5 }),
			run: func(t *testing.T, h *harness) smtpReply {
				c := h.login(lnStartTLS, appUser, appPass) // 4 commands, then AUTH restarts the count
				c.expect("NOOP", 250, "")
				c.expect("VRFY x", 252, "")
				c.expect("RSET", 250, "")
				c.expect("HELP", 502, "")
				c.expect("EHLO client.test", 250, "")
				return c.read() // sent before a 6th command: the limit is reached
			}},
		{name: "max_idle_commands after a transaction", code: 421, enh: "4.7.0",
			mod: limits(func(s *config.Submission) { s.MaxIdleCommands = 5 }),
			run: func(t *testing.T, h *harness) smtpReply {
				c := h.login(lnImplicit, appUser, appPass)
				for range 3 { // transactions in between restart the count
					c.expect("NOOP", 250, "")
					c.expect("NOOP", 250, "")
					c.expect("NOOP", 250, "")
					c.expect("MAIL FROM:<a@example.com>", 250, "")
					c.expect("RSET", 250, "")
				}
				for range 5 {
					c.expect("NOOP", 250, "")
				}
				return c.read()
			}},
	}
}

func auth(user, pass string) func(*testing.T, *harness) smtpReply {
	return func(t *testing.T, h *harness) smtpReply {
		c := h.dialRaw(lnImplicit)
		c.expect("EHLO client.test", 250, "")
		return c.cmd("AUTH PLAIN " + plain(user, pass))
	}
}

func ehlo(arg string) func(*testing.T, *harness) smtpReply {
	return func(t *testing.T, h *harness) smtpReply { return h.dialRaw(lnImplicit).cmd("EHLO " + arg) }
}

func secondConnection(t *testing.T, h *harness) smtpReply {
	h.dialRaw(lnStartTLS) // holds the only slot
	_, g := h.dialGreeting(lnImplicit)
	return g
}

// TestRejections asserts the exact reply and enhanced code of every
// refusal, that it is logged as event=rejected with those codes, and that
// nothing was stored.
func TestRejections(t *testing.T) {
	t.Parallel()
	shared := start(t, testConfig(t)) // for the cases with the default config, run in turn
	for _, rc := range rejections() {
		t.Run(rc.name, func(t *testing.T) {
			var h *harness
			if rc.mod == nil && rc.opts == (harnessOpts{}) {
				hh := *shared
				hh.t = t
				h = &hh
			} else {
				t.Parallel()
				h = start(t, testConfig(t, rc.mod), rc.opts)
			}
			before := len(h.logs.events("rejected"))
			r := rc.run(t, h)
			if r.Code != rc.code || r.Enh != rc.enh || !strings.Contains(r.Text, rc.text) {
				t.Fatalf("got %v, want %d %s %s", r, rc.code, rc.enh, rc.text)
			}
			if strings.Contains(r.Text, "internal") && rc.code != 451 {
				t.Errorf("internal text in reply: %v", r)
			}
			relaytest.Eventually(t, "event=rejected", func() bool {
				for _, ev := range h.logs.events("rejected")[before:] {
					if ev["smtp_code"] == float64(rc.code) && ev["smtp_enh"] == rc.enh {
						return true
					}
				}
				return false
			})
			if n := h.stored(); n != 0 {
				t.Errorf("%d messages stored after a refusal", n)
			}
		})
	}
}

// TestQueueDown: when JetStream is unreachable the message is refused with
// 451 4.3.0; after the store comes back, what was accepted before is all
// there and the refused message is not.
func TestQueueDown(t *testing.T) {
	t.Parallel()
	h := start(t, testConfig(t))
	c := inTx(h, appUser, appPass, "a@example.com", "x@one.test")
	c.expect("DATA", 354, "")
	c.send(message("a@example.com", "") + ".\r\n")
	ok := c.read()
	if ok.Code != 250 {
		t.Fatalf("first message: %v", ok)
	}
	h.q.Close()
	c.expect("MAIL FROM:<a@example.com>", 250, "")
	c.expect("RCPT TO:<y@two.test>", 250, "")
	c.expect("DATA", 354, "")
	c.send(message("a@example.com", "") + ".\r\n")
	if r := c.read(); r.Code != 451 || r.Enh != "4.3.0" {
		t.Fatalf("with the queue down: %v, want 451 4.3.0", r)
	}
	if strings.Contains(h.logs.String(), `"event":"accepted"`) && len(h.logs.events("accepted")) != 1 {
		t.Fatalf("accepted events: %v", h.logs.events("accepted"))
	}
	q := queuetest.RunJetStream(t, queuetest.Options{DataDir: h.qDir})
	entries := leaseFrom(t, q, 1)
	id := strings.TrimPrefix(ok.Text, "OK: queued as ")
	if entries[id+"/one.test"] == nil {
		t.Fatalf("accepted message lost; have %v", entries)
	}
	if n := queuetest.StreamMsgs(t, q); n != 1 {
		t.Fatalf("%d messages in the queue, want only the accepted one", n)
	}
}
