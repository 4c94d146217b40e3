package smtpclient

import (
	"strings"

	"github.com/jetrelay/jetrelay/relay/dnsname"
)

// reportKeySuffix keeps report transports' connections apart from the
// domain's policy-bound ones: an unverified session opened for a report
// is never reused for mail an MTA-STS or DANE policy protects.
const reportKeySuffix = "|tlsrpt"

// ReportMX returns the Transport for a TLS-RPT report to domain's MX
// hosts. RFC 8460 §3: reports must be delivered even when the very TLS
// policy they report on fails, so MTA-STS, DANE and delivery.tls settings
// are not applied; STARTTLS is used when offered, without checking the
// certificate, and a failed handshake falls back to plaintext (RFC 7435).
// The denied-networks guard of the MX dialer still applies.
func (c *Client) ReportMX(domain string) Transport {
	ascii, err := dnsname.ToASCII(domain)
	if err != nil {
		invalid := newError(withCause(replyBadDomain, err.Error()), false, err)
		return &reportTransport{mxTransport{domain: strings.ToLower(domain), invalid: invalid}}
	}
	return &reportTransport{mxTransport{domain: ascii, plan: PlanFor(PolicyOpportunistic), port: c.o.Port,
		res: c.o.Resolver, warn: c.warn}}
}

// reportTransport is MX delivery without the domain's TLS policy.
type reportTransport struct{ mxTransport }

func (t *reportTransport) Key() string { return t.mxTransport.Key() + reportKeySuffix }
