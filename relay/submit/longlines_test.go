package submit

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"testing"

	msgauth "github.com/emersion/go-msgauth/dkim"
	"github.com/jetrelay/jetrelay/dkim"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/relaytest"
)

// longHTML is an HTML body with one 3,000-octet line (and a trailing
// space and 8-bit text, which quoted-printable must keep).
var longHTML = "<html><body>\r\n<p>" + strings.Repeat("<b>wörd</b> ", 250) + "</p> \r\n</body></html>\r\n"

// checkLines fails if msg has a line over 998 octets or a bare CR/LF.
func checkLines(t *testing.T, msg []byte) {
	t.Helper()
	if hasLongLine(msg) {
		t.Fatalf("a line over 998 octets remains")
	}
	if ok, _ := canonical(msg, 0); !ok {
		t.Fatalf("output is not CRLF-canonical")
	}
}

// decodedBody reads a part's content through its transfer encoding.
func decodedBody(t *testing.T, cte string, r io.Reader) string {
	t.Helper()
	switch strings.ToLower(cte) {
	case "quoted-printable":
		r = quotedprintable.NewReader(r)
	case "base64":
		r = base64.NewDecoder(base64.StdEncoding, r)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestLongLinesSinglePart(t *testing.T) {
	in := "From: a@example.com\r\nSubject: hi\r\nContent-Type: text/html; charset=utf-8\r\n" +
		"Content-Transfer-Encoding: 8bit\r\n\r\n" + longHTML
	out, err := fixLongLines([]byte(in), false)
	if err != nil {
		t.Fatal(err)
	}
	checkLines(t, out)
	m, err := mail.ReadMessage(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Header["Content-Transfer-Encoding"]; len(got) != 1 || got[0] != "quoted-printable" {
		t.Fatalf("Content-Transfer-Encoding = %q", got)
	}
	if m.Header.Get("Mime-Version") != "1.0" || m.Header.Get("Subject") != "hi" {
		t.Fatalf("header: %v", m.Header)
	}
	if got := decodedBody(t, "quoted-printable", m.Body); got != longHTML {
		t.Fatalf("decoded body differs:\n%q\nwant\n%q", got, longHTML)
	}
}

func TestLongLinesMultipart(t *testing.T) {
	text := "plain version\r\n"
	in := "From: a@example.com\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"b1\"\r\n\r\n" +
		"preamble\r\n--b1\r\nContent-Type: text/plain\r\n\r\n" + text +
		"--b1\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + longHTML +
		"--b1--\r\nepilogue\r\n"
	out, err := fixLongLines([]byte(in), false)
	if err != nil {
		t.Fatal(err)
	}
	checkLines(t, out)
	if !bytes.Contains(out, []byte("--b1\r\nContent-Type: text/plain\r\n\r\n"+text+"--b1\r\n")) {
		t.Errorf("the short part was changed:\n%s", out)
	}
	m, err := mail.ReadMessage(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	mr := multipart.NewReader(m.Body, "b1")
	var got []string
	for {
		p, err := mr.NextRawPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, decodedBody(t, p.Header.Get("Content-Transfer-Encoding"), p))
	}
	// multipart's reader drops the CRLF before each delimiter.
	want := []string{strings.TrimSuffix(text, "\r\n"), strings.TrimSuffix(longHTML, "\r\n")}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("parts decode to %q, want %q", got, want)
	}
}

func TestLongLinesRefused(t *testing.T) {
	long := strings.Repeat("x", 1200)
	cases := []struct {
		name, msg string
		reject    bool
		want      error
	}{
		{"reject mode", "From: a@example.com\r\n\r\n" + longHTML, true, errLongLine},
		{"multipart/signed", "From: a@example.com\r\n" +
			"Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=s\r\n\r\n" +
			"--s\r\nContent-Type: text/html\r\n\r\n" + longHTML +
			"--s\r\nContent-Type: application/pkcs7-signature\r\n\r\nMIIB\r\n--s--\r\n", false, errLongSigned},
		{"signed inside mixed", "From: a@example.com\r\nContent-Type: multipart/mixed; boundary=m\r\n\r\n" +
			"--m\r\nContent-Type: multipart/signed; boundary=s\r\n\r\n--s\r\n\r\n" + long + "\r\n--s--\r\n--m--\r\n",
			false, errLongSigned},
		{"pkcs7-mime", "From: a@example.com\r\nContent-Type: application/pkcs7-mime\r\n\r\n" + long + "\r\n",
			false, errLongSigned},
		{"inline PGP", "From: a@example.com\r\n\r\n-----BEGIN PGP SIGNED MESSAGE-----\r\n" + long + "\r\n",
			false, errLongSigned},
		{"header without whitespace", "From: a@example.com\r\nX-Long: " + long + "\r\n\r\nhi\r\n",
			false, errLongHeader},
		{"unterminated multipart", "From: a@example.com\r\nContent-Type: multipart/mixed; boundary=m\r\n\r\n" +
			"--m\r\n\r\n" + long + "\r\n", false, errLongLine},
		{"unknown encoding", "From: a@example.com\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\n" + long + "\r\n",
			false, errLongLine},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := fixLongLines([]byte(c.msg), c.reject); err != c.want {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
}

func TestLongLinesHeaderAndBase64(t *testing.T) {
	words := strings.Repeat("word ", 500) // 2,500 octets with spaces
	raw := bytes.Repeat([]byte{0, 1, 2, 250, 'a'}, 600)
	in := "From: a@example.com\r\nSubject: " + words + "\r\nContent-Type: application/octet-stream\r\n" +
		"Content-Transfer-Encoding: base64\r\n\r\n" + base64.StdEncoding.EncodeToString(raw) + "\r\n"
	out, err := fixLongLines([]byte(in), false)
	if err != nil {
		t.Fatal(err)
	}
	checkLines(t, out)
	m, err := mail.ReadMessage(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	// Unfolding (RFC 5322 §2.2.3) gives the field back.
	if got := strings.ReplaceAll(m.Header.Get("Subject"), "\r\n", ""); got != strings.TrimSpace(words) {
		t.Fatalf("Subject after folding differs: %q", got)
	}
	if got := decodedBody(t, "base64", m.Body); got != string(raw) {
		t.Fatal("base64 content changed by re-wrapping")
	}
	// long_lines: reject is about body lines; header lines are folded anyway.
	short := "From: a@example.com\r\nSubject: " + words + "\r\n\r\nhi\r\n"
	out, err = fixLongLines([]byte(short), true)
	if err != nil {
		t.Fatalf("reject mode refused a foldable header: %v", err)
	}
	checkLines(t, out)
	if !strings.HasSuffix(string(out), "\r\n\r\nhi\r\n") {
		t.Fatalf("body changed: %q", out[len(out)-20:])
	}
}

// TestLongLinesSubmitted: through the server with a real DKIM signer, a
// long HTML line is stored re-encoded and the signature verifies; with
// long_lines: reject it is refused 554 5.6.0 and nothing is stored.
func TestLongLinesSubmitted(t *testing.T) {
	t.Parallel()
	key, err := dkim.GenerateKey(dkim.Ed25519, 0)
	if err != nil {
		t.Fatal(err)
	}
	pemBytes, err := dkim.MarshalKey(key)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "k.pem")
	if err := os.WriteFile(keyFile, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	sg, err := dkim.NewSigner(
		[]dkim.KeySpec{{Domain: "example.com", Selector: "s1", KeyFile: keyFile, Sign: true}}, dkim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	zone, err := dkim.ZoneLine("s1", "example.com", key)
	if err != nil {
		t.Fatal(err)
	}
	fake := relaytest.NewZone()
	fake.AddLine(t, zone)
	h := start(t, testConfig(t), harnessOpts{signer: sg})
	c := h.login(lnImplicit, appUser, appPass)
	msg := "From: <a@example.com>\r\nTo: x@one.test\r\nSubject: html\r\nContent-Type: text/html\r\n\r\n" + longHTML
	id := sendRaw(t, c, "MAIL FROM:<a@example.com>", "RCPT TO:<x@one.test>", msg)
	b := body(t, h.lease(1)[id+"/one.test"])
	checkLines(t, b)
	vs, err := msgauth.VerifyWithOptions(bytes.NewReader(b), &msgauth.VerifyOptions{LookupTXT: fake.LookupTXT})
	if err != nil || len(vs) != 1 || vs[0].Err != nil {
		t.Fatalf("DKIM after re-encoding: %v %+v", err, vs)
	}
	m, err := mail.ReadMessage(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if got := decodedBody(t, m.Header.Get("Content-Transfer-Encoding"), m.Body); got != longHTML {
		t.Fatalf("stored body decodes to something else")
	}
	textPart := "--b\r\nContent-Type: text/plain\r\n\r\nplain text\r\n"
	multi := "From: <a@example.com>\r\nTo: x@one.test\r\nSubject: alt\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/alternative; boundary=b\r\n\r\n" + textPart +
		"--b\r\nContent-Type: text/html\r\n\r\n" + longHTML + "--b--\r\n"
	id = sendRaw(t, c, "MAIL FROM:<a@example.com>", "RCPT TO:<x@one.test>", multi)
	b = body(t, h.lease(1)[id+"/one.test"])
	checkLines(t, b)
	vs, err = msgauth.VerifyWithOptions(bytes.NewReader(b), &msgauth.VerifyOptions{LookupTXT: fake.LookupTXT})
	if err != nil || len(vs) != 1 || vs[0].Err != nil {
		t.Fatalf("DKIM after re-encoding a multipart: %v %+v", err, vs)
	}
	if !bytes.Contains(b,
		[]byte(textPart+"--b\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n")) {
		t.Fatalf("multipart not stored as expected:\n%s", b[:min(len(b), 800)])
	}

	hr := start(t, testConfig(t, func(c *config.Config) { c.Submission.LongLines = "reject" }))
	cr := hr.login(lnImplicit, appUser, appPass)
	cr.expect("MAIL FROM:<a@example.com>", 250, "")
	cr.expect("RCPT TO:<x@one.test>", 250, "")
	cr.expect("DATA", 354, "")
	cr.send(msg + ".\r\n")
	if r := cr.read(); r.Code != 554 || r.Enh != "5.6.0" {
		t.Fatalf("reject mode: %v", r)
	}
	if n := hr.stored(); n != 0 {
		t.Fatalf("%d stored in reject mode", n)
	}
}
