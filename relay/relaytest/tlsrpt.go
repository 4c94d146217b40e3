package relaytest

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/mail"
	"slices"
	"strings"
	"testing"
	"time"
)

// TLSReportMail parses an RFC 8460 §5.3 report message and fails t unless
// it is one: a multipart/report with report-type "tlsrpt", a text part
// first, an application/tlsrpt+gzip attachment named as §5.1 says, the
// TLS-Report-Domain and TLS-Report-Submission fields and the §5.3
// Subject. It returns the header and the gunzipped report, which it also
// checks with CheckTLSReport.
func TLSReportMail(t testing.TB, msg []byte) (mail.Header, map[string]any) {
	t.Helper()
	m, err := mail.ReadMessage(bytes.NewReader(msg))
	if err != nil {
		t.Fatalf("report message: %v", err)
	}
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "tlsrpt" {
		t.Fatalf("Content-Type %q: want multipart/report; report-type=tlsrpt", m.Header.Get("Content-Type"))
	}
	dom, sub := m.Header.Get("TLS-Report-Domain"), m.Header.Get("TLS-Report-Submission")
	if dom == "" || sub == "" {
		t.Fatalf("TLS-Report-Domain %q, TLS-Report-Submission %q: both required (RFC 8460 §5.3)", dom, sub)
	}
	if s := m.Header.Get("Subject"); !strings.HasPrefix(s, "Report Domain: "+dom+" Submitter: "+sub+" Report-ID: <") {
		t.Fatalf("Subject %q is not RFC 8460 §5.3's", s)
	}
	mr := multipart.NewReader(m.Body, params["boundary"])
	first, err := mr.NextPart()
	if err != nil || !strings.HasPrefix(first.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("first part: %v %q, want text/plain", err, first.Header.Get("Content-Type"))
	}
	att, err := mr.NextPart()
	if err != nil {
		t.Fatalf("report part: %v", err)
	}
	if ct := att.Header.Get("Content-Type"); ct != "application/tlsrpt+gzip" {
		t.Fatalf("report part Content-Type %q", ct)
	}
	_, dp, err := mime.ParseMediaType(att.Header.Get("Content-Disposition"))
	fn := strings.Split(strings.TrimSuffix(dp["filename"], ".json.gz"), "!")
	if err != nil || !strings.HasSuffix(dp["filename"], ".json.gz") || len(fn) < 4 || fn[0] != sub || fn[1] != dom {
		t.Fatalf("file name %q: want %s!%s!<begin>!<end>[!<id>].json.gz (RFC 8460 §5.1)", dp["filename"], sub, dom)
	}
	gz, err := io.ReadAll(att) // multipart decodes base64 (quoted-printable only); decode here
	if err != nil {
		t.Fatal(err)
	}
	return m.Header, GunzipTLSReport(t, decodeB64(t, att.Header.Get("Content-Transfer-Encoding"), gz))
}

func decodeB64(t testing.TB, cte string, b []byte) []byte {
	t.Helper()
	if !strings.EqualFold(cte, "base64") {
		t.Fatalf("report part Content-Transfer-Encoding %q, want base64", cte)
	}
	out := make([]byte, len(b))
	n, err := base64Decode(out, b)
	if err != nil {
		t.Fatalf("base64: %v", err)
	}
	return out[:n]
}

// GunzipTLSReport gunzips and parses a report and checks it with
// CheckTLSReport, failing t on any problem.
func GunzipTLSReport(t testing.TB, gz []byte) map[string]any {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatalf("gunzip: %v", err)
	}
	js, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("gunzip: %v", err)
	}
	var r map[string]any
	if err := json.Unmarshal(js, &r); err != nil {
		t.Fatalf("report JSON: %v", err)
	}
	if err := CheckTLSReport(r); err != nil {
		t.Fatalf("report does not follow RFC 8460 §4.4: %v\n%s", err, js)
	}
	return r
}

// tlsrptResultTypes are RFC 8460 §4.3.2.1's result types.
var tlsrptResultTypes = []string{"starttls-not-supported", "certificate-host-mismatch", "certificate-expired",
	"certificate-not-trusted", "validation-failure", "tlsa-invalid", "dnssec-invalid", "dane-required",
	"sts-policy-fetch-error", "sts-policy-invalid", "sts-webpki-invalid"}

// CheckTLSReport checks a parsed report against RFC 8460's schema (§4.4
// and the JSON schema of its appendix): required members with their
// types, RFC 3339 date-times, policy and result types from the
// registries, counts that are non-negative integers, and no member the
// RFC does not define.
func CheckTLSReport(r map[string]any) error {
	c := &schemaCheck{}
	c.members("", r, []string{"organization-name", "date-range", "contact-info", "report-id", "policies"}, nil)
	c.str("organization-name", r["organization-name"])
	c.str("contact-info", r["contact-info"])
	c.str("report-id", r["report-id"])
	if dr, ok := c.obj("date-range", r["date-range"]); ok {
		c.members("date-range", dr, []string{"start-datetime", "end-datetime"}, nil)
		c.datetime("date-range.start-datetime", dr["start-datetime"])
		c.datetime("date-range.end-datetime", dr["end-datetime"])
	}
	pols, ok := r["policies"].([]any)
	if !ok || len(pols) == 0 {
		c.fail("policies: want a non-empty array")
	}
	for i, p := range pols {
		c.policy(fmt.Sprintf("policies[%d]", i), p)
	}
	return c.err()
}

type schemaCheck struct{ problems []string }

func (c *schemaCheck) fail(format string, args ...any) {
	c.problems = append(c.problems, fmt.Sprintf(format, args...))
}

func (c *schemaCheck) err() error {
	if len(c.problems) == 0 {
		return nil
	}
	return fmt.Errorf("%s", strings.Join(c.problems, "; "))
}

func (c *schemaCheck) members(path string, o map[string]any, required, optional []string) {
	for _, k := range required {
		if _, ok := o[k]; !ok {
			c.fail("%s: required member %q missing", path, k)
		}
	}
	for k := range o {
		if !slices.Contains(required, k) && !slices.Contains(optional, k) {
			c.fail("%s: member %q is not in RFC 8460", path, k)
		}
	}
}

func (c *schemaCheck) obj(path string, v any) (map[string]any, bool) {
	o, ok := v.(map[string]any)
	if !ok {
		c.fail("%s: want an object", path)
	}
	return o, ok
}

func (c *schemaCheck) str(path string, v any) string {
	s, ok := v.(string)
	if !ok || s == "" {
		c.fail("%s: want a non-empty string, got %v", path, v)
	}
	return s
}

func (c *schemaCheck) datetime(path string, v any) {
	if _, err := time.Parse(time.RFC3339, c.str(path, v)); err != nil {
		c.fail("%s: not an RFC 3339 date-time: %v", path, err)
	}
}

func (c *schemaCheck) count(path string, v any) {
	n, ok := v.(float64)
	if !ok || n < 0 || n != float64(int64(n)) {
		c.fail("%s: want a non-negative integer, got %v", path, v)
	}
}

func (c *schemaCheck) strings(path string, v any) {
	a, ok := v.([]any)
	if !ok {
		c.fail("%s: want an array of strings", path)
	}
	for i, s := range a {
		c.str(fmt.Sprintf("%s[%d]", path, i), s)
	}
}

func (c *schemaCheck) ip(path string, v any) {
	if v != nil && net.ParseIP(c.str(path, v)) == nil {
		c.fail("%s: %v is not an IP address", path, v)
	}
}

func (c *schemaCheck) policy(path string, v any) {
	p, ok := c.obj(path, v)
	if !ok {
		return
	}
	c.members(path, p, []string{"policy", "summary"}, []string{"failure-details"})
	if d, ok := c.obj(path+".policy", p["policy"]); ok {
		c.members(path+".policy", d, []string{"policy-type", "policy-domain"}, []string{"policy-string", "mx-host"})
		if pt := c.str(path+".policy.policy-type", d["policy-type"]); !slices.Contains([]string{"tlsa", "sts", "no-policy-found"}, pt) {
			c.fail("%s.policy.policy-type %q is not tlsa, sts or no-policy-found", path, pt)
		}
		c.str(path+".policy.policy-domain", d["policy-domain"])
		if s, ok := d["policy-string"]; ok {
			c.strings(path+".policy.policy-string", s)
		}
		if s, ok := d["mx-host"]; ok {
			c.strings(path+".policy.mx-host", s)
		}
	}
	if s, ok := c.obj(path+".summary", p["summary"]); ok {
		c.members(path+".summary", s, []string{"total-successful-session-count", "total-failure-session-count"}, nil)
		c.count(path+".summary.total-successful-session-count", s["total-successful-session-count"])
		c.count(path+".summary.total-failure-session-count", s["total-failure-session-count"])
	}
	fds, _ := p["failure-details"].([]any)
	for i, f := range fds {
		c.failure(fmt.Sprintf("%s.failure-details[%d]", path, i), f)
	}
}

func (c *schemaCheck) failure(path string, v any) {
	f, ok := c.obj(path, v)
	if !ok {
		return
	}
	c.members(path, f, []string{"result-type", "failed-session-count"}, []string{"sending-mta-ip",
		"receiving-mx-hostname", "receiving-mx-helo", "receiving-ip", "additional-information", "failure-reason-code"})
	if rt := c.str(path+".result-type", f["result-type"]); !slices.Contains(tlsrptResultTypes, rt) {
		c.fail("%s.result-type %q is not one of RFC 8460 §4.3.2.1's", path, rt)
	}
	c.count(path+".failed-session-count", f["failed-session-count"])
	c.ip(path+".sending-mta-ip", f["sending-mta-ip"])
	c.ip(path+".receiving-ip", f["receiving-ip"])
	if h, ok := f["receiving-mx-hostname"]; ok {
		c.str(path+".receiving-mx-hostname", h)
	}
}

// base64Decode decodes standard base64 with line breaks.
func base64Decode(dst, src []byte) (int, error) {
	clean := bytes.Map(func(r rune) rune {
		if r == '\r' || r == '\n' || r == ' ' || r == '\t' {
			return -1
		}
		return r
	}, src)
	return base64.StdEncoding.Decode(dst, clean)
}
