package submit

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/emersion/go-smtp"
	"github.com/google/go-cmp/cmp"
)

// TestStripMeta: the metadata fields leave the header section (folded
// ones whole), the rest of the message stays byte for byte, and values are
// unfolded, trimmed and decoded.
func TestStripMeta(t *testing.T) {
	t.Parallel()
	const rest = "Subject: s\r\n\r\nX-Jetrelay-Meta-Body: not a header\r\n"
	cases := []struct {
		name string
		in   string
		out  string
		meta map[string]string
		tag  string
	}{
		{name: "none", in: "From: a@example.com\r\n" + rest, out: "From: a@example.com\r\n" + rest},
		{
			name: "first middle last",
			in: "X-Jetrelay-Meta-Order: 42\r\nFrom: a@example.com\r\nx-jetrelay-tag:  welcome \r\n" +
				"To: b@example.net\r\nX-JETRELAY-META-User_ID: u-1\r\n" + rest,
			out:  "From: a@example.com\r\nTo: b@example.net\r\n" + rest,
			meta: map[string]string{"order": "42", "user_id": "u-1"},
			tag:  "welcome",
		},
		{
			name: "folded and encoded",
			in: "From: a@example.com\r\nX-Jetrelay-Meta-Note: first\r\n\tsecond\r\n" +
				"X-Jetrelay-Meta-Name: =?UTF-8?Q?J=C3=BCrgen?=\r\nX-Jetrelay-Meta-Raw: caf\xc3\xa9\r\n" +
				"X-Jetrelay-Meta-Odd: =?x-unknown?Q?abc?=\r\nX-Jetrelay-Meta-Empty:\r\n" + rest,
			out:  "From: a@example.com\r\n" + rest,
			meta: map[string]string{"note": "first\tsecond", "name": "Jürgen", "raw": "café", "odd": "=?x-unknown?Q?abc?=", "empty": ""},
		},
		{
			name: "empty tag and other x-jetrelay fields",
			in:   "From: a@example.com\r\nX-Jetrelay-Tag:\r\nX-Jetrelay-Other: kept\r\n" + rest,
			out:  "From: a@example.com\r\nX-Jetrelay-Other: kept\r\n" + rest,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := []byte(tc.in)
			if _, err := scanHeader(in, 0); err != nil {
				t.Fatal(err)
			}
			out, mf, err := stripMeta(in)
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != tc.out {
				t.Errorf("message:\n%q\nwant\n%q", out, tc.out)
			}
			if len(out) > 0 && &out[len(out)-1] != &in[len(in)-1] {
				t.Error("the result is not a suffix of the input (copied)")
			}
			if diff := cmp.Diff(tc.meta, mf.meta); diff != "" {
				t.Errorf("meta (-want +got):\n%s", diff)
			}
			if mf.tag != tc.tag {
				t.Errorf("tag %q, want %q", mf.tag, tc.tag)
			}
		})
	}
}

// metaHeaders returns n X-Jetrelay-Meta fields k0..k<n-1>.
func metaHeaders(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "X-Jetrelay-Meta-K%d: v%d\r\n", i, i)
	}
	return b.String()
}

// TestStripMetaRefuses: every limit and rule refuses with 554 5.6.0 and a
// text naming the problem.
func TestStripMetaRefuses(t *testing.T) {
	t.Parallel()
	cases := []struct{ name, hdr, text string }{
		{"eleven fields", metaHeaders(11), "at most 10"},
		{"key too long", "X-Jetrelay-Meta-" + strings.Repeat("k", 33) + ": v\r\n", "key must be 1 to 32"},
		{"empty key", "X-Jetrelay-Meta-: v\r\n", "key must be"},
		{"key charset", "X-Jetrelay-Meta-a=b: v\r\n", "key must be"},
		{"value too long", "X-Jetrelay-Meta-k: " + strings.Repeat("é", 257) + "\r\n", "longer than 256 characters"},
		{"raw value far too long", "X-Jetrelay-Meta-k: " + strings.Repeat("x", 5000) + "\r\n", "too long"},
		{"duplicate key", "X-Jetrelay-Meta-K: 1\r\nx-jetrelay-meta-k: 2\r\n", "X-Jetrelay-Meta-k: given more than once"},
		{"not utf-8", "X-Jetrelay-Meta-k: \xff\xfe\r\n", "not UTF-8"},
		{"encoded control", "X-Jetrelay-Meta-k: =?UTF-8?Q?a=07b?=\r\n", "control characters"},
		{"tag twice", "X-Jetrelay-Tag: a\r\nX-Jetrelay-Tag: b\r\n", "X-Jetrelay-Tag: given more than once"},
		{"empty tag twice", "X-Jetrelay-Tag:\r\nX-Jetrelay-Tag: b\r\n", "X-Jetrelay-Tag: given more than once"},
		{"tag too long", "X-Jetrelay-Tag: " + strings.Repeat("t", 129) + "\r\n", "longer than 128"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			msg := []byte("From: a@example.com\r\n" + tc.hdr + "\r\nbody\r\n")
			_, _, err := stripMeta(msg)
			se, ok := err.(*smtp.SMTPError)
			if !ok || se.Code != 554 || se.EnhancedCode != (smtp.EnhancedCode{5, 6, 0}) ||
				!strings.Contains(se.Message, tc.text) {
				t.Fatalf("got %v, want 554 5.6.0 with %q", err, tc.text)
			}
		})
	}
	if _, mf, err := stripMeta([]byte("From: a@example.com\r\n" + metaHeaders(10) + "\r\nb\r\n")); err != nil ||
		len(mf.meta) != 10 {
		t.Fatalf("ten fields: %v (%d kept)", err, len(mf.meta))
	}
	ok := "X-Jetrelay-Meta-" + strings.Repeat("k", 32) + ": " + strings.Repeat("é", 256) + "\r\n" +
		"X-Jetrelay-Tag: " + strings.Repeat("t", 128) + "\r\n"
	if _, _, err := stripMeta([]byte("From: a@example.com\r\n" + ok + "\r\nb\r\n")); err != nil {
		t.Fatalf("values at the limits: %v", err)
	}
}

// TestMetaSubmitted: through the server, the metadata is gone from what
// the signer signed and from the stored message, travels in the envelope
// of every recipient domain and in the accepted event; a message over
// 1 MiB (read in blocks) is stripped the same way; a refused one is
// answered 554 5.6.0, logged as rejected, and nothing is stored.
func TestMetaSubmitted(t *testing.T) {
	t.Parallel()
	sg := &recordingSigner{}
	h := start(t, testConfig(t), harnessOpts{signer: sg})
	c := h.login(lnImplicit, appUser, appPass)
	hdr := "X-Jetrelay-Meta-Order-ID: 1234\r\nX-Jetrelay-Tag: receipt\r\nX-Jetrelay-Meta-Customer:\r\n =?UTF-8?B?SsO8cmdlbg==?=\r\n"
	big := strings.Repeat(strings.Repeat("z", 76)+"\r\n", 20000) // 1.5 MiB
	want := map[string]string{"order-id": "1234", "customer": "Jürgen"}
	for _, extra := range []string{"", big} {
		msg := message("a@example.com", hdr) + extra
		c.expect("MAIL FROM:<a@example.com>", 250, "")
		c.expect("RCPT TO:<x@one.test>", 250, "")
		c.expect("RCPT TO:<y@two.test>", 250, "")
		c.expect("DATA", 354, "")
		c.send(msg + ".\r\n")
		r := c.read()
		if r.Code != 250 {
			t.Fatalf("end of DATA: %v", r)
		}
		id := strings.TrimPrefix(r.Text, "OK: queued as ")
		sg.mu.Lock()
		signed := sg.signed
		sg.mu.Unlock()
		if bytes.Contains(bytes.ToLower(signed), []byte("x-jetrelay")) {
			t.Fatalf("the signer saw metadata fields:\n%.600s", signed)
		}
		entries := h.lease(2)
		for _, dom := range []string{"one.test", "two.test"} {
			e := entries[id+"/"+dom]
			if e == nil {
				t.Fatalf("%s: no entry for %s", id, dom)
			}
			b := body(t, e)
			if bytes.Contains(bytes.ToLower(b), []byte("x-jetrelay")) || !bytes.HasSuffix(b, []byte("Hello.\r\n"+extra)) {
				t.Fatalf("stored message keeps metadata or lost content:\n%.600s", b)
			}
			if diff := cmp.Diff(want, e.Env.Meta); diff != "" || e.Env.Tag != "receipt" {
				t.Fatalf("envelope meta (-want +got):\n%s tag %q", diff, e.Env.Tag)
			}
		}
	}
	acc := h.logs.events("accepted")
	if len(acc) != 2 {
		t.Fatalf("%d accepted events", len(acc))
	}
	for _, ev := range acc {
		if m, _ := ev["meta"].(map[string]any); m["order-id"] != "1234" || m["customer"] != "Jürgen" || ev["tag"] != "receipt" {
			t.Fatalf("accepted event without meta/tag: %v", ev)
		}
	}

	before := h.stored()
	c.expect("MAIL FROM:<a@example.com>", 250, "")
	c.expect("RCPT TO:<x@one.test>", 250, "")
	c.expect("DATA", 354, "")
	c.send(message("a@example.com", metaHeaders(11)) + ".\r\n")
	if r := c.read(); r.Code != 554 || r.Enh != "5.6.0" || !strings.Contains(r.Text, "at most 10") {
		t.Fatalf("eleven fields: %v", r)
	}
	if n := h.stored(); n != before {
		t.Fatalf("refused message stored (%d → %d)", before, n)
	}
	rej := h.logs.events("rejected")
	if len(rej) != 1 || !strings.Contains(fmt.Sprint(rej[0]["reason"]), "X-Jetrelay-Meta") || rej[0]["smtp_code"] != float64(554) {
		t.Fatalf("rejected events: %v", rej)
	}
}

// FuzzStripMeta: never panics; an accepted header section keeps no
// metadata field, the body is untouched, the result is a suffix of the
// input (no copy), and every kept value is within the limits.
func FuzzStripMeta(f *testing.F) {
	for _, s := range []string{
		"From: a@b.test\r\nX-Jetrelay-Meta-K: v\r\n\r\nbody\r\n",
		"X-Jetrelay-Tag: t\r\n x\r\nX-Jetrelay-Meta-a: =?utf-8?q?=C3=A9?=\r\n\r\n",
		"X-Jetrelay-Meta-K: 1\r\nX-Jetrelay-Meta-k: 2\r\n\r\n",
		"From: a\r\n\r\nX-Jetrelay-Tag: body\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		// stripMeta rewrites in place; the engine's input must stay as it is.
		msg, err := normalize(append([]byte(nil), in...), false, 0)
		if err != nil {
			return
		}
		if _, err := scanHeader(msg, 0); err != nil {
			return
		}
		bodyAt := bytes.Index(msg, []byte("\r\n\r\n"))
		var body []byte
		if bodyAt >= 0 {
			body = append([]byte(nil), msg[bodyAt+4:]...)
		}
		out, mf, err := stripMeta(msg)
		if err != nil {
			return
		}
		if len(out) > 0 && &out[len(out)-1] != &msg[len(msg)-1] {
			t.Fatal("result is not a suffix of the input")
		}
		h, err := scanHeader(out, 0)
		if err != nil || h.Meta {
			t.Fatalf("after stripping: %v, meta fields left %v: %q", err, h.Meta, out)
		}
		if bodyAt >= 0 && !bytes.HasSuffix(out, body) {
			t.Fatalf("body changed: %q", out)
		}
		if len(mf.meta) > metaMaxFields || utf8.RuneCountInString(mf.tag) > metaMaxTag {
			t.Fatalf("limits exceeded: %v %q", mf.meta, mf.tag)
		}
		for k, v := range mf.meta {
			if !validMetaKey(k) || utf8.RuneCountInString(v) > metaMaxValue || !utf8.ValidString(v) {
				t.Fatalf("bad pair %q=%q", k, v)
			}
		}
	})
}
