package smtpclient

import (
	"context"
	"crypto/x509"
	"errors"
	"net"
	"time"
)

// Inspection is what MX delivery to a domain would do now, worked out by
// the code delivery runs (`jetrelay tls check`): the transport of MX, the
// MTA-STS decision of applySTS, the hosts of gather with their TLSA
// records, the enforce filter of stsAllows and the plan of hostPlan.
type Inspection struct {
	Domain string // A-labels
	// Policy is the domain's tls_policy before DANE: mta-sts,
	// mta-sts-testing, configured, opportunistic or none.
	Policy string
	// STS is the MTA-STS decision (zero: none, or MTA-STS off).
	STS STSResult
	// Implicit: no MX records, the domain is its own MX (RFC 5321 §5.1).
	Implicit bool
	// MXSecure: the MX answer (or its denial) was DNSSEC-secure.
	MXSecure bool
	// DANE: the client looks TLSA records up (delivery.dane.enabled with
	// delivery.dns.dnssec: trust_ad).
	DANE  bool
	Hosts []HostInspection
	// Err is what Hosts fails with (no usable host, null MX, DNS): the
	// attempt would defer or fail without connecting; Classify gives
	// the reply.
	Err error
}

// HostInspection is one MX host in delivery order.
type HostInspection struct {
	MX    MX
	Addrs HostAddrs
	TLSA  []TLSAAnswer
	// Host is the host as delivery dials it (Host.DANE: usable records).
	Host Host
	// Plan is the effective plan for it and Policy its tls_policy.
	Plan   Plan
	Policy string
	// Excluded says why delivery does not try the host ("": it does);
	// Err is the lookup error that made it unusable, if that is why.
	Excluded string
	Err      error
	// testing is the MTA-STS testing policy whose unmet requirements
	// Probe names (nil: none).
	testing *STSPolicy
}

// Inspect works out what delivery to domain would do now, without
// connecting to any host. The error is the policy store's.
func (c *Client) Inspect(ctx context.Context, domain string) (Inspection, error) {
	tr, err := c.MX(ctx, domain, false)
	if err != nil {
		return Inspection{}, err
	}
	t := tr.(*mxTransport)
	in := Inspection{Domain: t.domain, DANE: t.dane}
	if t.invalid != nil {
		in.Err = t.invalid
		return in, nil
	}
	if st := t.applySTS(ctx); st != nil {
		in.STS = st.res
	}
	in.Policy = t.Plan().PolicyName()
	g, err := t.gather(ctx)
	if err != nil {
		in.Err = err
		return in, nil
	}
	in.Implicit, in.MXSecure = g.implicit, g.secure
	for _, gh := range g.hosts {
		in.Hosts = append(in.Hosts, t.inspectHost(gh))
	}
	if hosts, err := g.usable(); err != nil {
		in.Err = err
	} else if _, err := t.stsHosts(hosts); err != nil {
		in.Err = err
	}
	return in, nil
}

func (t *mxTransport) inspectHost(g gathered) HostInspection {
	h := HostInspection{MX: g.mx, Addrs: g.addrs, TLSA: g.tlsa, Host: g.host, Err: g.err,
		Plan: hostPlan(t, g.host), Policy: t.Plan().PolicyName()}
	if len(g.host.DANE) > 0 {
		h.Policy = PolicyDANE
	}
	if st := t.stsSt.Load(); st != nil && st.res.Policy != nil && st.res.Policy.Mode == STSTesting &&
		h.Policy == PolicyNameSTSTesting {
		h.testing = st.res.Policy
	}
	switch {
	case g.err != nil:
		h.Excluded = "unusable: " + g.err.Error()
	case g.skip != "":
		h.Excluded = g.skip
	case !t.stsAllows(g.host):
		h.Excluded = "not named by the MTA-STS enforce policy (RFC 8461 §4.1)"
	}
	return h
}

// ProbeResult is a live session with one address of a host under its
// effective plan, ended after EHLO (and STARTTLS): no mail is sent.
type ProbeResult struct {
	IP string
	// Met: a session that meets the host's plan was made (delivery would
	// go on to MAIL FROM); Err says why not.
	Met bool
	Err error
	// TLSFailure is the TLS-RPT result type of the failure, or of the
	// requirement an MTA-STS testing policy's delivery would not meet.
	TLSFailure string
	// TLS, Cipher and Verified describe the session as the delivery log
	// would (TLS "none": plaintext).
	TLS, Cipher string
	Verified    bool
	// STARTTLS: the server offered it.
	STARTTLS bool
	// Chain is the certificate chain the server presented (from a second,
	// unchecked handshake when the plan's own did not complete).
	Chain []*x509.Certificate
	// WebPKI is the chain checked against the roots for the host name
	// (nil: valid); DANE the chain checked against the host's usable TLSA
	// records (nil: a match, or no records).
	WebPKI error
	DANE   *TLSFailure
}

// Probe connects to ip of h (from Inspect) through the MX dialer (the
// denied-networks guard) with the client's timeouts, says EHLO and
// STARTTLS as h's plan says, and quits.
func (c *Client) Probe(ctx context.Context, h HostInspection, ip net.IP) ProbeResult {
	r := ProbeResult{IP: ip.String(), TLS: "none"}
	req := dialRequest{dialer: c.o.mxDialer(), host: h.Host, ip: ip, plan: h.Plan, helo: c.o.Hostname,
		roots: c.o.Roots, timeouts: c.o.Timeouts, dane: h.Host.DANE}
	s, err := dial(ctx, req)
	if err == nil {
		r.Met, r.TLS, r.Cipher, r.Verified = true, s.tlsName(), s.cipher(), s.verified
		r.STARTTLS, r.Chain = s.tls != nil || s.offers("STARTTLS"), s.chain()
		if h.testing != nil {
			r.TLSFailure = c.testingFailure(h.testing, &Attempt{Reached: true, Conn: s.Info(), Session: s})
		}
		s.Quit(c.o.Timeouts.Mail)
	} else {
		r.Err = err
		if v := Classify(err); h.Policy == PolicyNameSTS && v.Reply.Enh == replyTLSMissing.Enh {
			r.Err = newError(stsEnforceReply(v.Reply), true, nil) // as delivery's reply reads (stsReply)
		}
		var tf *TLSFailure
		if errors.As(err, &tf) {
			r.TLSFailure = tf.Result
		} else {
			r.TLSFailure = failureOfReply(Classify(err).Reply)
		}
	}
	// The certificate all the same, unchecked: when STARTTLS was offered
	// but not used (plan none, plaintext fallback) or the handshake failed.
	if r.Chain == nil && ctx.Err() == nil && (r.Met && r.STARTTLS || !r.Met && isTLSError(err)) {
		req.plan, req.dane, req.host.DANE = Plan{TLS: "starttls"}, nil, nil
		if s, err := dial(ctx, req); err == nil {
			r.STARTTLS, r.Chain = s.tls != nil || s.offers("STARTTLS"), s.chain()
			s.Quit(c.o.Timeouts.Mail)
		}
	}
	if len(r.Chain) > 0 {
		r.WebPKI = verifyLeaf(r.Chain, c.o.Roots, h.Host.Name)
		if len(h.Host.DANE) > 0 {
			r.DANE = verifyDANE(r.Chain, h.Host.DANE, daneNames(h.Host), time.Now())
		}
	}
	return r
}

func (s *Session) offers(ext string) bool {
	ok, _ := s.c.Extension(ext)
	return ok
}

func (s *Session) chain() []*x509.Certificate {
	if s.tls == nil {
		return nil
	}
	return s.tls.PeerCertificates
}

// verifyLeaf checks chain[0] for name against roots, the rest of chain
// as intermediates (what a verify plan's handshake checks).
func verifyLeaf(chain []*x509.Certificate, roots *x509.CertPool, name string) error {
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: inter})
	return err
}

// FailureOf is the TLS-RPT result type of a certificate check's error
// (ProbeResult.WebPKI): certificate-host-mismatch, certificate-expired or
// certificate-not-trusted; "" for nil.
func FailureOf(err error) string { return failureOfError(err) }
