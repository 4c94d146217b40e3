package deliver

import (
	"crypto/x509"
	"fmt"

	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/mtasts"
	"github.com/jetrelay/jetrelay/relay/netguard"
	"github.com/jetrelay/jetrelay/relay/smtpclient"
)

// stsSource is the MTA-STS store for d (relay/mtasts): nil when
// delivery.mta_sts.enabled is false or no cache bucket was given. Its
// lookups go through delivery.dns.servers, its fetches through the
// denied-networks guard and roots (system plus delivery.tls.ca_file).
func (b runtimeBuilder) stsSource(d config.Delivery, roots *x509.CertPool) (smtpclient.STSSource, error) {
	if b.stsKV == nil || !d.MTASTS.Enabled {
		return nil, nil
	}
	g, err := netguard.Parse(d.DeniedNetworks, d.AllowedNetworks)
	if err != nil {
		return nil, fmt.Errorf("deliver: %w", err)
	}
	s, err := mtasts.New(mtasts.Options{KV: b.stsKV, DNS: smtpclient.DNSOptions{Servers: d.DNS.Servers,
		Timeout: d.DNS.Timeout.D()}, Roots: roots, Guard: g, Port: d.MTASTS.HTTPSPort, Logger: b.log})
	if err != nil {
		return nil, fmt.Errorf("deliver: delivery.mta_sts: %w", err)
	}
	return s, nil
}
