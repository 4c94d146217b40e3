package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Bounds of one `jetrelay send` conversation.
const (
	sendDialTimeout    = 10 * time.Second
	sendCommandTimeout = 30 * time.Second
	sendDataTimeout    = 2 * time.Minute
	base64LineLen      = 76 // RFC 2045 §6.8
)

// buildMessage writes the RFC 5322 message: a text/plain body
// (quoted-printable), or multipart/mixed (RFC 2046 §5.1.3) with each
// attachment in base64. It returns the message and its Message-ID.
func buildMessage(o *sendOpts) ([]byte, string, error) {
	var rnd [12]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, "", err
	}
	msgID := "<" + hex.EncodeToString(rnd[:]) + "@" + o.hostname + ">"
	var b bytes.Buffer
	hdr := func(k, v string) { fmt.Fprintf(&b, "%s: %s\r\n", k, v) }
	hdr("From", o.from)
	hdr("To", strings.Join(o.to, ", "))
	hdr("Subject", mime.QEncoding.Encode("utf-8", o.subject))
	hdr("Date", time.Now().Format(time.RFC1123Z))
	hdr("Message-ID", msgID)
	hdr("MIME-Version", "1.0")
	writeMeta(hdr, o.meta, o.tag)
	if len(o.attach) == 0 {
		hdr("Content-Type", "text/plain; charset=utf-8")
		hdr("Content-Transfer-Encoding", "quoted-printable")
		b.WriteString("\r\n")
		if err := writeQP(&b, o.body); err != nil {
			return nil, "", err
		}
		return b.Bytes(), msgID, o.checkSize(b.Len())
	}
	mw := multipart.NewWriter(&b)
	hdr("Content-Type", mime.FormatMediaType("multipart/mixed", map[string]string{"boundary": mw.Boundary()}))
	b.WriteString("\r\n")
	text, err := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"text/plain; charset=utf-8"},
		"Content-Transfer-Encoding": {"quoted-printable"}})
	if err == nil {
		err = writeQP(text, o.body)
	}
	for _, f := range o.attach {
		if err != nil {
			break
		}
		err = o.attachFile(mw, f, &b)
	}
	if err == nil {
		err = mw.Close()
	}
	if err != nil {
		return nil, "", err
	}
	return b.Bytes(), msgID, o.checkSize(b.Len())
}

func writeQP(w io.Writer, s string) error {
	qp := quotedprintable.NewWriter(w)
	if _, err := io.WriteString(qp, s); err != nil {
		return err
	}
	return qp.Close()
}

// attachFile adds one file as a base64 part; sofar bounds the message.
func (o *sendOpts) attachFile(mw *multipart.Writer, path string, sofar *bytes.Buffer) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("--attach: %w", err)
	}
	defer f.Close()
	limit := o.maxBytes
	if limit <= 0 {
		limit = 1 << 30
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return fmt.Errorf("--attach %s: %w", path, err)
	}
	if err := o.checkSize(sofar.Len() + base64.StdEncoding.EncodedLen(len(data))); err != nil {
		return fmt.Errorf("--attach %s: %w", path, err)
	}
	name := filepath.Base(path)
	ctype := mime.TypeByExtension(filepath.Ext(name))
	if ctype == "" {
		ctype = "application/octet-stream"
	}
	part, err := mw.CreatePart(textproto.MIMEHeader{
		"Content-Type":              {ctype},
		"Content-Disposition":       {mime.FormatMediaType("attachment", map[string]string{"filename": name})},
		"Content-Transfer-Encoding": {"base64"},
	})
	if err != nil {
		return err
	}
	enc := base64.StdEncoding.EncodeToString(data)
	for len(enc) > 0 {
		n := min(base64LineLen, len(enc))
		if _, err := io.WriteString(part, enc[:n]+"\r\n"); err != nil {
			return err
		}
		enc = enc[n:]
	}
	return nil
}

// checkSize refuses a message the relay's limit would refuse anyway.
func (o *sendOpts) checkSize(n int) error {
	if o.maxBytes > 0 && int64(n) > o.maxBytes {
		return fmt.Errorf("the message would be larger than the relay's limit of %d bytes "+
			"(submission.max_message_bytes)", o.maxBytes)
	}
	return nil
}

// submitMessage sends msg and returns the queue id from the 250 reply
// ("OK: queued as ID").
func submitMessage(ctx context.Context, o *sendOpts, msg []byte) (string, error) {
	c, err := dialSubmission(o)
	if err != nil {
		return "", err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer stop()
	c.CommandTimeout, c.SubmissionTimeout = sendCommandTimeout, sendDataTimeout
	if err := c.Auth(sasl.NewPlainClient("", o.user, o.smtpPasswd)); err != nil {
		return "", fmt.Errorf("AUTH as %s: %w", o.user, err)
	}
	// SIZE lets the relay refuse an oversized message before it is sent
	// (RFC 1870); SMTPUTF8 is needed for a non-ASCII address (RFC 6531 §3.4).
	opts := &smtp.MailOptions{Size: int64(len(msg)), UTF8: !isASCIIText(append([]string{o.from}, o.to...)...)}
	if err := c.Mail(o.from, opts); err != nil {
		return "", fmt.Errorf("MAIL FROM:<%s>: %w", o.from, err)
	}
	for _, rc := range o.to {
		if err := c.Rcpt(rc, nil); err != nil {
			return "", fmt.Errorf("RCPT TO:<%s>: %w", rc, err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return "", fmt.Errorf("DATA: %w", err)
	}
	if _, err := w.Write(msg); err != nil {
		return "", fmt.Errorf("DATA: %w", err)
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "", fmt.Errorf("DATA: %w", err)
	}
	_ = c.Quit()
	_, id, ok := strings.Cut(resp.StatusText, "queued as ")
	if !ok || strings.TrimSpace(id) == "" {
		return "", fmt.Errorf("accepted, but the reply %q names no queue id", resp.StatusText)
	}
	return strings.Fields(id)[0], nil
}

// dialSubmission connects with STARTTLS or implicit TLS.
func dialSubmission(o *sendOpts) (*smtp.Client, error) {
	host, _, _ := net.SplitHostPort(o.server)
	conf := o.tlsConfig(host)
	d := net.Dialer{Timeout: sendDialTimeout}
	conn, err := d.Dial("tcp", o.server)
	if err != nil {
		return nil, err
	}
	if o.tlsMode == listenerImplicit {
		tc := tls.Client(conn, conf)
		_ = tc.SetDeadline(time.Now().Add(sendCommandTimeout))
		if err := tc.Handshake(); err != nil {
			conn.Close()
			return nil, fmt.Errorf("TLS with %s: %w", o.server, err)
		}
		_ = tc.SetDeadline(time.Time{})
		return smtp.NewClient(tc), nil
	}
	c, err := smtp.NewClientStartTLS(conn, conf)
	if err != nil {
		return nil, fmt.Errorf("STARTTLS with %s: %w", o.server, err)
	}
	return c, nil
}

// tlsConfig verifies the server's certificate for host; a loopback server
// may instead present one of the relay's own certificates (pinned).
func (o *sendOpts) tlsConfig(host string) *tls.Config {
	conf := &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	if o.insecure {
		conf.InsecureSkipVerify = true
		return conf
	}
	if !isLoopbackHost(host) {
		return conf
	}
	pinned := loadPinned(o.certFiles)
	if len(pinned) == 0 {
		return conf
	}
	conf.InsecureSkipVerify = true // replaced by VerifyConnection below
	conf.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("the server sent no certificate")
		}
		leaf := cs.PeerCertificates[0]
		for _, p := range pinned {
			if bytes.Equal(p, leaf.Raw) {
				return nil
			}
		}
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		_, err := leaf.Verify(x509.VerifyOptions{DNSName: host, Intermediates: inter})
		return err
	}
	return conf
}

// loadPinned reads the first certificate of each PEM file that exists.
func loadPinned(files []string) [][]byte {
	var out [][]byte
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if blk, _ := pem.Decode(data); blk != nil && blk.Type == "CERTIFICATE" {
			out = append(out, blk.Bytes)
		}
	}
	return out
}

func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func isASCIIText(ss ...string) bool {
	for _, s := range ss {
		for i := 0; i < len(s); i++ {
			if s[i] >= 0x80 {
				return false
			}
		}
	}
	return true
}

// readLimited reads at most limit+1 bytes (the caller checks the length).
func readLimited(r io.Reader, limit int) ([]byte, error) {
	return io.ReadAll(io.LimitReader(r, int64(limit)+1))
}
