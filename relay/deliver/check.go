package deliver

import (
	"strings"

	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/mtasts"
	"github.com/jetrelay/jetrelay/relay/smtpclient"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// CheckClient is the SMTP client delivery builds from set — the
// delivery.dns resolver (with its AD-bit trust), the denied-networks
// guard on MX dials, the roots with delivery.tls.ca_file, the
// delivery.tls policies, DANE and the timeouts — with sts as its MTA-STS
// source. `jetrelay tls check` inspects and probes through it, so what
// it shows is what delivery does.
func CheckClient(set Settings, sts smtpclient.STSSource, log zerolog.Logger) (*smtpclient.Client, error) {
	b := runtimeBuilder{log: log, sts: sts}
	c, _, err := b.client(set, nil)
	return c, err
}

// STSInspector is the MTA-STS store delivery builds from d (resolver,
// guard, roots, https_port) over kv, for mtasts.Store.Inspect; kv may be
// nil (the cached policy is then reported unavailable).
func STSInspector(d config.Delivery, kv jetstream.KeyValue, log zerolog.Logger) (*mtasts.Store, error) {
	roots, err := loadRoots(d.TLS.CAFile)
	if err != nil {
		return nil, err
	}
	o, err := stsOptions(d, roots, kv, log)
	if err != nil {
		return nil, err
	}
	return mtasts.NewInspector(o)
}

// RouteFor is the index of the delivery.routes entry that carries
// domain's mail (the first that names it or "*", as delivery picks), or
// -1 for MX delivery.
func RouteFor(d config.Delivery, domain string) int {
	domain = strings.ToLower(domain)
	for i, r := range d.Routes {
		for _, dom := range r.Domains {
			if dom == "*" || strings.ToLower(dom) == domain {
				return i
			}
		}
	}
	return -1
}
