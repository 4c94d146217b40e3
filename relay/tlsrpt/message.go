package tlsrpt

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// MediaType is the gzipped report's media type (RFC 8460 §6.4, §5.3).
const MediaType = "application/tlsrpt+gzip"

// base64Line is the encoded attachment's line length (RFC 2045 §6.8: ≤ 76).
const base64Line = 76

// Gzip encodes r as the gzipped JSON report (RFC 8460 §5.1).
func Gzip(r *Report) ([]byte, error) {
	js, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	if _, err := w.Write(js); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// FileName is the report's file name (RFC 8460 §5.1): sender "!"
// policy-domain "!" begin "!" end "!" unique-id ".json.gz", the times in
// seconds since the epoch.
func FileName(submitter, domain string, start, end time.Time, unique string) string {
	return submitter + "!" + domain + "!" + strconv.FormatInt(start.Unix(), 10) + "!" +
		strconv.FormatInt(end.Unix(), 10) + "!" + unique + ".json.gz"
}

// mailOptions is what compose needs beside the report.
type mailOptions struct {
	From, Submitter, Domain string
	To                      []string
	ReportID, FileName      string
	Now                     time.Time
}

// compose writes the RFC 8460 §5.3 message: a multipart/report
// (report-type "tlsrpt", RFC 6522) with a text part and the gzipped report
// as an application/tlsrpt+gzip attachment, with the TLS-Report-Domain
// and TLS-Report-Submission header fields and the §5.3 Subject. Lines end
// in CRLF; everything is 7-bit.
func compose(o mailOptions, gz []byte) []byte {
	var rnd [12]byte
	_, _ = rand.Read(rnd[:])
	boundary := "tlsrpt-" + hex.EncodeToString(rnd[:])
	var b strings.Builder
	h := func(k, v string) { b.WriteString(k + ": " + v + "\r\n") }
	h("From", "<"+o.From+">")
	h("To", "<"+strings.Join(o.To, ">, <")+">")
	h("Date", o.Now.Format(time.RFC1123Z))
	h("Subject", "Report Domain: "+o.Domain+" Submitter: "+o.Submitter+" Report-ID: <"+o.ReportID+">")
	h("Message-ID", "<"+o.ReportID+">")
	h("TLS-Report-Domain", o.Domain)
	h("TLS-Report-Submission", o.Submitter)
	h("MIME-Version", "1.0")
	h("Content-Type", `multipart/report; report-type="tlsrpt"; boundary="`+boundary+`"`)
	b.WriteString("\r\nThis is a multipart message in MIME format.\r\n\r\n--" + boundary + "\r\n")
	h("Content-Type", "text/plain; charset=us-ascii")
	h("Content-Transfer-Encoding", "7bit")
	fmt.Fprintf(&b, "\r\nThis is an aggregate TLS report (RFC 8460) from %s for %s.\r\nReport-ID: %s\r\n\r\n--%s\r\n",
		o.Submitter, o.Domain, o.ReportID, boundary)
	h("Content-Type", MediaType)
	h("Content-Transfer-Encoding", "base64")
	h("Content-Disposition", `attachment; filename="`+o.FileName+`"`)
	b.WriteString("\r\n")
	enc := base64.StdEncoding.EncodeToString(gz)
	for len(enc) > base64Line {
		b.WriteString(enc[:base64Line] + "\r\n")
		enc = enc[base64Line:]
	}
	b.WriteString(enc + "\r\n\r\n--" + boundary + "--\r\n")
	return []byte(b.String())
}
