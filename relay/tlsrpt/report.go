package tlsrpt

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/relay/dnsclient"
	"github.com/jetrelay/jetrelay/relay/mtasts"
	"github.com/miekg/dns"
	"github.com/nats-io/nats.go/jetstream"
)

// Report is an RFC 8460 §4.4 aggregate report.
type Report struct {
	OrganizationName string         `json:"organization-name"`
	DateRange        DateRange      `json:"date-range"`
	ContactInfo      string         `json:"contact-info"`
	ReportID         string         `json:"report-id"`
	Policies         []PolicyReport `json:"policies"`
}

// DateRange is the report's period (RFC 3339 date-times, UTC).
type DateRange struct {
	Start string `json:"start-datetime"`
	End   string `json:"end-datetime"`
}

// PolicyReport is one policies[] entry (§4.4).
type PolicyReport struct {
	Policy         PolicyDesc      `json:"policy"`
	Summary        Summary         `json:"summary"`
	FailureDetails []FailureDetail `json:"failure-details,omitempty"`
}

// PolicyDesc describes the policy evaluated (§4.3.1).
type PolicyDesc struct {
	Type   string   `json:"policy-type"`
	String []string `json:"policy-string,omitempty"`
	Domain string   `json:"policy-domain"`
	MXHost []string `json:"mx-host,omitempty"`
}

// Summary is the session totals (§4.3.1).
type Summary struct {
	Successful int64 `json:"total-successful-session-count"`
	Failed     int64 `json:"total-failure-session-count"`
}

// FailureDetail is one failure-details row (§4.3.2).
type FailureDetail struct {
	ResultType  string `json:"result-type"`
	SendingIP   string `json:"sending-mta-ip,omitempty"`
	ReceivingMX string `json:"receiving-mx-hostname,omitempty"`
	ReceivingIP string `json:"receiving-ip,omitempty"`
	Count       int64  `json:"failed-session-count"`
}

// Meta is who reports: organization-name, contact-info and the submitter
// (the From domain, RFC 8460 §5.3's TLS-Report-Submission).
type Meta struct {
	OrgName   string
	Contact   string
	Submitter string
}

// policySource gives the policy-string of the policies reported on.
type policySource struct {
	sts      jetstream.KeyValue // relay/mtasts' cache (nil: none)
	dns      *dnsclient.Client
	tlsaPort int // delivery.port
}

// build makes the report of d for [start, end).
func (ps policySource) build(ctx context.Context, d *DomainCounts, m Meta, start, end time.Time, id string) Report {
	r := Report{OrganizationName: m.OrgName, ContactInfo: m.Contact, ReportID: id,
		DateRange: DateRange{Start: start.UTC().Format(time.RFC3339), End: end.UTC().Format(time.RFC3339)}}
	for _, p := range d.Policies {
		pr := PolicyReport{Policy: PolicyDesc{Type: p.Type, Domain: d.Domain},
			Summary: Summary{Successful: p.Success, Failed: p.Failed()}}
		switch p.Type {
		case TypeSTS:
			pr.Policy.String, pr.Policy.MXHost = ps.stsPolicy(ctx, d.Domain)
		case TypeTLSA:
			pr.Policy.String, pr.Policy.MXHost = ps.tlsaRecords(ctx, p.MXHost), []string{p.MXHost}
		}
		for _, f := range p.Failures {
			pr.FailureDetails = append(pr.FailureDetails, FailureDetail{ResultType: f.Result, SendingIP: f.SendingIP,
				ReceivingMX: f.ReceivingMX, ReceivingIP: f.ReceivingIP, Count: f.Count})
		}
		r.Policies = append(r.Policies, pr)
	}
	slices.SortStableFunc(r.Policies, func(a, b PolicyReport) int {
		return strings.Compare(a.Policy.Type+strings.Join(a.Policy.MXHost, ","), b.Policy.Type+strings.Join(b.Policy.MXHost, ","))
	})
	return r
}

// stsPolicy is the cached MTA-STS policy's lines and mx patterns.
func (ps policySource) stsPolicy(ctx context.Context, domain string) ([]string, []string) {
	if ps.sts == nil {
		return nil, nil
	}
	p, ok, err := mtasts.Cached(ctx, ps.sts, domain)
	if err != nil || !ok {
		return nil, nil
	}
	return p.Lines(), p.MX
}

// tlsaRecords are the TLSA records of mx as presentation strings ("3 1 1
// <hex>"), looked up now at _<port>._tcp.<mx> (RFC 7672 §2.2).
func (ps policySource) tlsaRecords(ctx context.Context, mx string) []string {
	if ps.dns == nil || mx == "" {
		return nil
	}
	msg, err := ps.dns.Query(ctx, "_"+strconv.Itoa(ps.tlsaPort)+"._tcp."+mx, dns.TypeTLSA)
	if err != nil {
		return nil
	}
	var out []string
	for _, rr := range msg.Answer {
		if t, ok := rr.(*dns.TLSA); ok {
			out = append(out, fmt.Sprintf("%d %d %d %s", t.Usage, t.Selector, t.MatchingType, t.Certificate))
		}
	}
	return out
}
