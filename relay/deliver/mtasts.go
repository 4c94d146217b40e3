package deliver

import (
	"crypto/x509"
	"fmt"

	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/mtasts"
	"github.com/jetrelay/jetrelay/relay/netguard"
	"github.com/jetrelay/jetrelay/relay/smtpclient"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// stsSource is the MTA-STS store for d (relay/mtasts): nil when
// delivery.mta_sts.enabled is false or no cache bucket was given. Its
// lookups go through delivery.dns.servers, its fetches through the
// denied-networks guard and roots (system plus delivery.tls.ca_file).
func (b runtimeBuilder) stsSource(d config.Delivery, roots *x509.CertPool) (smtpclient.STSSource, error) {
	if b.stsKV == nil || !d.MTASTS.Enabled {
		return nil, nil
	}
	o, err := stsOptions(d, roots, b.stsKV, b.log)
	if err != nil {
		return nil, err
	}
	s, err := mtasts.New(o)
	if err != nil {
		return nil, fmt.Errorf("deliver: delivery.mta_sts: %w", err)
	}
	return s, nil
}

// stsOptions are the MTA-STS store's options for d over kv.
func stsOptions(d config.Delivery, roots *x509.CertPool, kv jetstream.KeyValue, log zerolog.Logger) (mtasts.Options, error) {
	g, err := netguard.Parse(d.DeniedNetworks, d.AllowedNetworks)
	if err != nil {
		return mtasts.Options{}, fmt.Errorf("deliver: %w", err)
	}
	return mtasts.Options{KV: kv, DNS: smtpclient.DNSOptions{Servers: d.DNS.Servers, Timeout: d.DNS.Timeout.D()},
		Roots: roots, Guard: g, Port: d.MTASTS.HTTPSPort, Logger: log}, nil
}
