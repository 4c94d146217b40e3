package smtpclient

import (
	"context"
	"strings"
)

// TLSPolicy is how MX delivery to a domain uses TLS.
type TLSPolicy string

// TLS policies.
const (
	// PolicyNone: plaintext, STARTTLS not tried.
	PolicyNone TLSPolicy = "none"
	// PolicyOpportunistic: STARTTLS when offered, certificate not checked;
	// a failed handshake → an immediate plaintext connection to the same
	// address (RFC 7435 §3).
	PolicyOpportunistic TLSPolicy = "opportunistic"
	// PolicyRequired: TLS or the next host, then defer; any certificate.
	PolicyRequired TLSPolicy = "required"
	// PolicyVerify: TLS with a certificate valid for the MX name (WebPKI
	// roots plus the configured CA) or the next host, then defer.
	PolicyVerify TLSPolicy = "verify"
)

// PolicyStore gives a recipient domain's TLS policy. The static store
// (StaticPolicies) comes from configuration; MTA-STS and DANE stores
// (backed by JetStream KV, so every node sees one answer) implement the
// same interface. Implementations must be safe for concurrent use.
type PolicyStore interface {
	// TLSPolicy returns the policy for domain (lower-case A-labels). An
	// error defers the domain's mail (the attempt is not made).
	TLSPolicy(ctx context.Context, domain string) (TLSPolicy, error)
}

// StaticPolicies is a PolicyStore from configuration: Domains by exact
// (lower-case) name, else Default (PolicyOpportunistic when empty).
type StaticPolicies struct {
	Default TLSPolicy
	Domains map[string]TLSPolicy
}

// TLSPolicy implements PolicyStore.
func (p StaticPolicies) TLSPolicy(_ context.Context, domain string) (TLSPolicy, error) {
	if pol, ok := p.Domains[strings.ToLower(domain)]; ok && pol != "" {
		return pol, nil
	}
	if p.Default == "" {
		return PolicyOpportunistic, nil
	}
	return p.Default, nil
}

// PlanFor maps a TLS policy to a dial plan.
func PlanFor(policy TLSPolicy) Plan {
	switch policy {
	case PolicyNone:
		return Plan{TLS: "none"}
	case PolicyRequired:
		return Plan{TLS: "starttls", RequireTLS: true}
	case PolicyVerify:
		return Plan{TLS: "starttls", RequireTLS: true, Verify: true}
	default: // opportunistic (RFC 7435)
		return Plan{TLS: "starttls", PlainFallback: true}
	}
}
