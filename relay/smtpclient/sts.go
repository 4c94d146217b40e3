package smtpclient

import (
	"context"
	"crypto/x509"
	"errors"
	"strings"
)

// STSMode is an MTA-STS policy mode (RFC 8461 §3.2).
type STSMode string

// MTA-STS modes.
const (
	STSEnforce STSMode = "enforce"
	STSTesting STSMode = "testing"
	STSNone    STSMode = "none"
)

// TLS policy names of the delivery log beyond Plan.PolicyName's
// (issue 17: dane, mta-sts, mta-sts-testing, configured, ...).
const (
	PolicyNameSTS        = "mta-sts"
	PolicyNameSTSTesting = "mta-sts-testing"
	// PolicyNameConfigured: the domain's own delivery.tls.domains entry.
	PolicyNameConfigured = "configured"
)

// TLS-RPT result types (RFC 8460 §4.3.2.1) that the MTA-STS part records.
const (
	FailSTARTTLS        = "starttls-not-supported"
	FailHostMismatch    = "certificate-host-mismatch"
	FailExpired         = "certificate-expired"
	FailNotTrusted      = "certificate-not-trusted"
	FailValidation      = "validation-failure"
	FailSTSFetch        = "sts-policy-fetch-error"
	FailSTSInvalid      = "sts-policy-invalid"
	FailSTSWebPKI       = "sts-webpki-invalid"
	replySTSNoMatchText = "MTA-STS policy (enforce): no MX host matches the policy's mx patterns"
)

// STSPolicy is the part of an MTA-STS policy delivery uses.
type STSPolicy struct {
	Mode STSMode
	MX   []string // patterns: "mx.example.com" or "*.example.com"
}

// Matches reports whether host (an MX name) matches one of p's patterns
// (RFC 8461 §4.1: a leading "*." matches exactly one label).
func (p *STSPolicy) Matches(host string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, pat := range p.MX {
		pat = strings.ToLower(strings.TrimSuffix(pat, "."))
		if rest, ok := strings.CutPrefix(pat, "*."); ok {
			label, parent, found := strings.Cut(host, ".")
			if found && label != "" && parent == rest {
				return true
			}
			continue
		}
		if host == pat {
			return true
		}
	}
	return false
}

// STSResult is an MTA-STS lookup's answer.
type STSResult struct {
	// Policy is the policy in force (nil: none, delivery as without MTA-STS).
	Policy *STSPolicy
	// Failure is the TLS-RPT result type of a failed fetch (with or
	// without a cached policy to fall back on).
	Failure string
}

// STSSource gives recipient domains' MTA-STS policies (relay/mtasts).
// Lookup never fails: without a usable policy delivery goes on as before
// (fail-open, RFC 8461 §5). Implementations must be safe for concurrent use.
type STSSource interface {
	Lookup(ctx context.Context, domain string) STSResult
}

// stsState is an mxTransport's MTA-STS decision for one attempt.
type stsState struct {
	res  STSResult
	plan Plan
}

// configuredDomain reports whether store has a per-domain entry for
// domain (delivery.tls.domains), which outranks an MTA-STS testing policy.
func configuredDomain(store PolicyStore, domain string) bool {
	sp, ok := store.(StaticPolicies)
	if !ok {
		return false
	}
	p, ok := sp.Domains[domain]
	return ok && p != ""
}

// applySTS looks up the domain's MTA-STS policy once per transport and
// decides the plan (issue 17 order: enforce > configured > testing >
// default; REQUIRETLS stays on top since enforce verifies too).
func (t *mxTransport) applySTS(ctx context.Context) *stsState {
	if t.sts == nil || t.invalid != nil {
		return nil
	}
	if st := t.stsSt.Load(); st != nil {
		return st
	}
	st := &stsState{res: t.sts.Lookup(ctx, t.domain), plan: t.plan}
	if p := st.res.Policy; p != nil {
		switch {
		case p.Mode == STSEnforce:
			st.plan = PlanFor(PolicyVerify)
			st.plan.Name = PolicyNameSTS
		case p.Mode == STSTesting && !t.configured:
			st.plan.Name = PolicyNameSTSTesting
		}
	}
	t.stsSt.Store(st)
	return st
}

// stsHosts keeps, under an enforce policy, only the hosts the policy
// names and those with usable TLSA records (DANE outranks); none left is a temporary failure (RFC 8461 §5: never a bounce).
func (t *mxTransport) stsHosts(hosts []Host) ([]Host, error) {
	st := t.stsSt.Load()
	if st == nil || st.res.Policy == nil || st.res.Policy.Mode != STSEnforce {
		return hosts, nil
	}
	kept := hosts[:0:0]
	for _, h := range hosts {
		if t.stsAllows(h) {
			kept = append(kept, h)
		}
	}
	if len(kept) == 0 {
		return nil, newError(withCause(replyTLSFailed, replySTSNoMatchText), true, nil)
	}
	return kept, nil
}

// stsAllows reports whether the MTA-STS decision lets delivery try h: no
// enforce policy, a host the policy names, or one with usable TLSA records.
func (t *mxTransport) stsAllows(h Host) bool {
	st := t.stsSt.Load()
	if st == nil || st.res.Policy == nil || st.res.Policy.Mode != STSEnforce {
		return true
	}
	return len(h.DANE) > 0 || st.res.Policy.Matches(h.Name)
}

// stsSession drops a reused session an enforce policy does not allow: not
// verified TLS, or to an MX host the policy does not name.
func stsSession(ctx context.Context, tr Transport, s *Session) *Session {
	t, ok := tr.(*mxTransport)
	if !ok || s == nil {
		return s
	}
	st := t.applySTS(ctx)
	if st == nil || st.res.Policy == nil || st.res.Policy.Mode != STSEnforce {
		return s
	}
	if s.tls != nil && s.verified && st.res.Policy.Matches(s.host) {
		return s
	}
	s.Close()
	return nil
}

// stsFailure is the TLS-RPT result type of an attempt under an MTA-STS
// policy: why an enforce attempt failed, or which requirement a testing
// policy's delivery did not meet; "" when all was well.
func (c *Client) stsFailure(tr Transport, a *Attempt) string {
	t, ok := tr.(*mxTransport)
	if !ok {
		return ""
	}
	st := t.stsSt.Load()
	if st == nil {
		return ""
	}
	p := st.res.Policy
	switch {
	case p == nil || p.Mode == STSNone:
		return st.res.Failure
	case a.Reached && p.Mode == STSTesting:
		return c.testingFailure(p, a)
	case !a.Reached && !a.Canceled:
		if f := failureOfReply(a.Last.Reply); f != "" {
			return f
		}
	}
	return st.res.Failure
}

// testingFailure says which requirement of a testing policy a delivered
// message's connection did not meet.
func (c *Client) testingFailure(p *STSPolicy, a *Attempt) string {
	switch {
	case !p.Matches(a.Conn.MX):
		return FailValidation
	case a.Conn.TLS == "none" || a.Conn.TLS == "":
		return FailSTARTTLS
	case a.Conn.Verified:
		return ""
	case a.Session != nil && a.Session.tls != nil:
		return failureOfError(verifyChain(*a.Session.tls, c.o.Roots, a.Conn.MX))
	}
	return FailNotTrusted
}

// failureOfError maps a certificate verification error to its result type.
func failureOfError(err error) string {
	var he x509.HostnameError
	var ce x509.CertificateInvalidError
	switch {
	case err == nil:
		return ""
	case errors.As(err, &he):
		return FailHostMismatch
	case errors.As(err, &ce) && ce.Reason == x509.Expired:
		return FailExpired
	}
	return FailNotTrusted
}

// failureOfReply maps the reply of a failed enforce attempt to its result
// type (the client's own replies carry the TLS error's text).
func failureOfReply(r Reply) string {
	switch {
	case r.Enh == replyTLSMissing.Enh:
		return FailSTARTTLS
	case r.Enh != replyTLSFailed.Enh:
		return ""
	case strings.Contains(r.Text, replySTSNoMatchText):
		return FailValidation
	case strings.Contains(r.Text, "certificate is valid for") || strings.Contains(r.Text, "not valid for any names"):
		return FailHostMismatch
	case strings.Contains(r.Text, "expired"):
		return FailExpired
	case strings.Contains(r.Text, "unknown authority") || strings.Contains(r.Text, "x509"):
		return FailNotTrusted
	}
	return FailValidation
}

// stsReply makes every failure of an enforce attempt read 4.7.5 with the
// reason (a missing STARTTLS included): temporary, never a bounce.
func stsReply(tr Transport, a *Attempt) {
	t, ok := tr.(*mxTransport)
	if !ok || a.Reached || a.Canceled {
		return
	}
	st := t.stsSt.Load()
	if st == nil || st.res.Policy == nil || st.res.Policy.Mode != STSEnforce || a.Last.Reply.Enh != replyTLSMissing.Enh {
		return
	}
	a.Last.Reply = stsEnforceReply(a.Last.Reply)
	a.Replies = fill(len(a.Replies), a.Last.Reply)
}

// stsEnforceReply is a missing STARTTLS under an enforce policy: 4.7.5
// with the reason, as every other enforce failure.
func stsEnforceReply(r Reply) Reply {
	return withCause(replyTLSFailed, "MTA-STS policy (enforce): "+r.Text)
}
