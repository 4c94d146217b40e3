package main

import (
	"crypto/x509"
	"fmt"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/mtasts"
	"github.com/jetrelay/jetrelay/relay/smtpclient"
)

// tlsReport is what `tls check` prints (--json: this object).
type tlsReport struct {
	Domain string `json:"domain"`
	// Route: the domain goes to a smarthost; nothing else is checked.
	Route  *tlsRoute `json:"route,omitempty"`
	DNSSEC string    `json:"dnssec"`
	DANE   string    `json:"dane"`
	// MTASTS is nil when delivery.mta_sts.enabled is false.
	MTASTS *mtasts.Inspection `json:"mta_sts,omitempty"`
	// Policy is the domain's tls_policy before DANE; STSFailure the
	// TLS-RPT result type of a failed policy fetch.
	Policy     string    `json:"tls_policy,omitempty"`
	STSFailure string    `json:"sts_failure,omitempty"`
	ImplicitMX bool      `json:"implicit_mx"`
	MXSecure   bool      `json:"mx_secure"`
	Hosts      []tlsHost `json:"hosts"`
	// HostsError is the reply delivery gives without connecting (no
	// usable MX host).
	HostsError string `json:"hosts_error,omitempty"`
	// Unprobed counts hosts with addresses beyond --max-mx.
	Unprobed int    `json:"unprobed_hosts,omitempty"`
	Met      bool   `json:"policy_met"`
	Verdict  string `json:"verdict"`
}

type tlsRoute struct {
	Index  int    `json:"index"`
	Host   string `json:"host"`
	TLS    string `json:"tls"`
	Verify bool   `json:"verify"`
}

type tlsHost struct {
	Name       string     `json:"name"`
	Preference uint16     `json:"preference"`
	MXSecure   bool       `json:"mx_secure"`
	AddrSecure bool       `json:"address_secure"`
	CNAME      string     `json:"cname,omitempty"`
	IPs        []string   `json:"ips"`
	TLSA       []tlsaLook `json:"tlsa,omitempty"`
	DANE       bool       `json:"dane"`
	Policy     string     `json:"tls_policy"`
	Requires   string     `json:"requires"`
	Excluded   string     `json:"excluded,omitempty"`
	Probes     []tlsProbe `json:"probes,omitempty"`
}

type tlsaLook struct {
	Name    string       `json:"name"`
	Secure  bool         `json:"secure"`
	Records []tlsaRecord `json:"records,omitempty"`
	Error   string       `json:"error,omitempty"`
}

type tlsaRecord struct {
	Record string `json:"record"` // "3 1 1 <hex>"
	Usable bool   `json:"usable"`
}

type tlsProbe struct {
	IP         string    `json:"ip"`
	Met        bool      `json:"policy_met"`
	Error      string    `json:"error,omitempty"`
	TLSFailure string    `json:"tls_failure,omitempty"`
	TLS        string    `json:"tls"`
	Cipher     string    `json:"cipher,omitempty"`
	Verified   bool      `json:"tls_verified"`
	STARTTLS   bool      `json:"starttls"`
	Certs      []tlsCert `json:"certificates,omitempty"`
	// WebPKI is "ok" or the check's error, WebPKIFailure its result
	// type; DANE is "match" or the failure ("" without TLSA records).
	WebPKI        string `json:"webpki,omitempty"`
	WebPKIFailure string `json:"webpki_failure,omitempty"`
	DANE          string `json:"dane,omitempty"`
	DANEFailure   string `json:"dane_failure,omitempty"`
}

type tlsCert struct {
	Subject  string    `json:"subject"`
	Names    []string  `json:"names,omitempty"`
	Issuer   string    `json:"issuer"`
	NotAfter time.Time `json:"not_after"`
	Expired  bool      `json:"expired"`
}

func newTLSReport(cfg *config.Config, domain string) *tlsReport {
	rep := &tlsReport{Domain: domain, Hosts: []tlsHost{}}
	rep.DNSSEC, rep.DANE = dnssecState(cfg.Delivery)
	return rep
}

// fill copies the inspection into the report.
func (r *tlsReport) fill(in smtpclient.Inspection) {
	r.Policy, r.STSFailure, r.ImplicitMX, r.MXSecure = in.Policy, in.STS.Failure, in.Implicit, in.MXSecure
	if in.Err != nil {
		r.HostsError = smtpclient.Classify(in.Err).Reply.String()
	}
	for _, h := range in.Hosts {
		th := tlsHost{Name: h.MX.Host, Preference: h.MX.Pref, MXSecure: h.MX.Secure, AddrSecure: h.Addrs.Secure,
			CNAME: h.Addrs.CNAME, IPs: []string{}, DANE: len(h.Host.DANE) > 0, Policy: h.Policy,
			Requires: requires(h), Excluded: h.Excluded}
		for _, ip := range h.Addrs.IPs {
			th.IPs = append(th.IPs, ip.String())
		}
		for _, a := range h.TLSA {
			l := tlsaLook{Name: a.Name, Secure: a.Secure}
			if a.Err != nil {
				l.Error = a.Err.Error()
			}
			for _, rec := range a.Records {
				l.Records = append(l.Records, tlsaRecord{Record: rec.String(), Usable: a.Secure && rec.Usable()})
			}
			th.TLSA = append(th.TLSA, l)
		}
		r.Hosts = append(r.Hosts, th)
	}
}

// requires says what the host's plan asks of a session.
func requires(h smtpclient.HostInspection) string {
	p := h.Plan
	switch {
	case p.TLS == "none":
		return "nothing: plaintext, STARTTLS not tried"
	case len(h.Host.DANE) > 0:
		return "STARTTLS and a certificate matching the TLSA records (RFC 7672)"
	case p.Verify:
		return "STARTTLS and a certificate valid for " + h.MX.Host + " (WebPKI roots and delivery.tls.ca_file)"
	case p.RequireTLS:
		return "STARTTLS, any certificate"
	}
	return "nothing: STARTTLS when offered, any certificate, plaintext otherwise"
}

func newTLSProbe(p smtpclient.ProbeResult, h smtpclient.HostInspection) tlsProbe {
	out := tlsProbe{IP: p.IP, Met: p.Met, TLSFailure: p.TLSFailure, TLS: p.TLS, Cipher: p.Cipher,
		Verified: p.Verified, STARTTLS: p.STARTTLS}
	if p.Err != nil {
		out.Error = p.Err.Error()
	}
	now := time.Now()
	for _, c := range p.Chain {
		out.Certs = append(out.Certs, newTLSCert(c, now))
	}
	if len(p.Chain) == 0 {
		return out
	}
	out.WebPKI = "ok"
	if p.WebPKI != nil {
		out.WebPKI, out.WebPKIFailure = p.WebPKI.Error(), smtpclient.FailureOf(p.WebPKI)
	}
	if len(h.Host.DANE) > 0 {
		out.DANE = "match"
		if p.DANE != nil {
			out.DANE, out.DANEFailure = p.DANE.Reason, p.DANE.Result
		}
	}
	return out
}

func newTLSCert(c *x509.Certificate, now time.Time) tlsCert {
	return tlsCert{Subject: c.Subject.String(), Names: c.DNSNames, Issuer: c.Issuer.String(), NotAfter: c.NotAfter,
		Expired: now.After(c.NotAfter)}
}

// decide sets Met and the verdict: some host delivery would try accepted
// a session that meets its policy.
func (r *tlsReport) decide() {
	usable, met := 0, ""
	for _, h := range r.Hosts {
		if h.Excluded != "" {
			continue
		}
		usable++
		for _, p := range h.Probes {
			if p.Met && met == "" {
				met = h.Name
			}
		}
	}
	switch {
	case r.HostsError != "":
		r.Verdict = "FAIL: delivery would not connect: " + r.HostsError
	case met != "":
		r.Met = true
		r.Verdict = fmt.Sprintf("OK: %s accepts a session meeting its policy (%s usable)", met,
			plural(usable, "MX host"))
	default:
		r.Verdict = "FAIL: no MX host delivery would try accepted a session meeting its policy"
	}
}

// printTLSReport prints the report as text.
func printTLSReport(io stdio, r *tlsReport) {
	_ = tprintf(io.out, "domain %s\n", r.Domain)
	if r.Route != nil {
		_ = tprintf(io.out, "route   delivery.routes[%d]: %s tls %s verify %v\n", r.Route.Index, r.Route.Host,
			r.Route.TLS, r.Route.Verify)
		_ = tprintf(io.out, "%s\n", r.Verdict)
		return
	}
	_ = tprintf(io.out, "dnssec  %s\ndane    %s\n", r.DNSSEC, r.DANE)
	printSTS(io, r)
	mx := "MX answer"
	if r.ImplicitMX {
		mx = "no MX records: the domain is its own MX; MX denial"
	}
	_ = tprintf(io.out, "policy  %s (%s secure: %v)\n", r.Policy, mx, r.MXSecure)
	for _, h := range r.Hosts {
		printTLSHost(io, h)
	}
	if r.Unprobed > 0 {
		_ = tprintf(io.out, "(%s more not probed: --max-mx)\n", plural(r.Unprobed, "MX host"))
	}
	_ = tprintf(io.out, "%s\n", r.Verdict)
}

func printSTS(io stdio, r *tlsReport) {
	s := r.MTASTS
	if s == nil {
		_ = tprintf(io.out, "mta-sts off (delivery.mta_sts.enabled: false)\n")
		return
	}
	rec := s.Record
	if s.RecordError != "" {
		rec = s.RecordError
	}
	_ = tprintf(io.out, "mta-sts record %s\n", rec)
	if s.Live != nil {
		_ = tprintf(io.out, "        live   %s\n", stsPolicy(*s.Live))
	} else if s.LiveError != "" {
		_ = tprintf(io.out, "        live   fetch failed (%s): %s\n", s.LiveFailure, s.LiveError)
	}
	switch c := s.Cached; {
	case c != nil:
		_ = tprintf(io.out, "        cached id %s, %s, fetched %s, expires %s (fresh %v, expired %v)\n", c.ID,
			stsPolicy(c.Policy), c.Fetched.UTC().Format(time.RFC3339), c.Expires.UTC().Format(time.RFC3339),
			c.Fresh, c.Expired)
	case s.CacheError != "":
		_ = tprintf(io.out, "        cached unavailable: %s\n", s.CacheError)
	default:
		_ = tprintf(io.out, "        cached none\n")
	}
	used := "none (delivered as without MTA-STS, RFC 8461 §5)"
	if p := s.Decision.Policy; p != nil {
		used = fmt.Sprintf("mode %s, mx %s (from %s)", p.Mode, strings.Join(p.MX, " "), s.Source)
	}
	_ = tprintf(io.out, "        in use %s\n", used)
}

func stsPolicy(p mtasts.Policy) string {
	return fmt.Sprintf("mode %s, mx %s, max_age %d", p.Mode, strings.Join(p.MX, " "), p.MaxAge)
}

func printTLSHost(io stdio, h tlsHost) {
	_ = tprintf(io.out, "MX %d %s  addresses %s  (MX secure %v, addresses secure %v)\n", h.Preference, h.Name,
		strings.Join(h.IPs, " "), h.MXSecure, h.AddrSecure)
	if h.CNAME != "" {
		_ = tprintf(io.out, "   cname    %s\n", h.CNAME)
	}
	for _, l := range h.TLSA {
		_ = tprintf(io.out, "   tlsa     %s (secure %v)%s\n", l.Name, l.Secure, errSuffix(l.Error))
		for _, rec := range l.Records {
			_ = tprintf(io.out, "            %s usable %v\n", rec.Record, rec.Usable)
		}
	}
	if h.Excluded != "" {
		_ = tprintf(io.out, "   not used %s\n", h.Excluded)
	}
	_ = tprintf(io.out, "   policy   %s: %s\n", h.Policy, h.Requires)
	for _, p := range h.Probes {
		printTLSProbe(io, p)
	}
}

func printTLSProbe(io stdio, p tlsProbe) {
	res := "FAIL"
	if p.Met {
		res = "OK"
	}
	tlsText := p.TLS
	if p.Cipher != "" {
		tlsText += " " + p.Cipher
	}
	_ = tprintf(io.out, "   probe    %s: %s  tls %s verified %v starttls %v%s%s\n", p.IP, res, tlsText,
		p.Verified, p.STARTTLS, errSuffix(p.Error), failSuffix(p.TLSFailure))
	for _, c := range p.Certs {
		state := "valid until"
		if c.Expired {
			state = "EXPIRED"
		}
		_ = tprintf(io.out, "   cert     %s names %s issuer %s, %s %s\n", c.Subject, strings.Join(c.Names, " "),
			c.Issuer, state, c.NotAfter.UTC().Format(time.RFC3339))
	}
	if p.WebPKI != "" {
		_ = tprintf(io.out, "   webpki   %s%s\n", p.WebPKI, failSuffix(p.WebPKIFailure))
	}
	if p.DANE != "" {
		_ = tprintf(io.out, "   dane     %s%s\n", p.DANE, failSuffix(p.DANEFailure))
	}
}

func errSuffix(s string) string {
	if s == "" {
		return ""
	}
	return ": " + s
}

func failSuffix(s string) string {
	if s == "" {
		return ""
	}
	return " [" + s + "]"
}
