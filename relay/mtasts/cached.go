package mtasts

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// Cached returns domain's policy from the cache bucket as delivery last
// stored it (expired or not); ok is false when none is cached. TLS-RPT
// (relay/tlsrpt) reports it as the policy the sessions were under.
func Cached(ctx context.Context, kv jetstream.KeyValue, domain string) (p Policy, ok bool, err error) {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	if !validKey(domain) {
		return Policy{}, false, nil
	}
	e, err := kv.Get(ctx, domain)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Policy{}, false, nil
	} else if err != nil {
		return Policy{}, false, err
	}
	var c cached
	if err := json.Unmarshal(e.Value(), &c); err != nil {
		return Policy{}, false, err
	}
	return c.Policy, true, nil
}

// Lines writes p as policy file lines (RFC 8461 §3.2), the form RFC 8460
// §4.3.1.2 wants for the policy-string of an sts report.
func (p Policy) Lines() []string {
	out := []string{"version: STSv1", "mode: " + string(p.Mode)}
	for _, mx := range p.MX {
		out = append(out, "mx: "+mx)
	}
	return append(out, "max_age: "+strconv.FormatInt(p.MaxAge, 10))
}
