package deliver

import (
	"net"
	"testing"

	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/rs/zerolog"
)

// TestRuntimeDNSAcrossReloads: a reload that leaves delivery.dns alone
// keeps the resolver and its cache; one that changes the servers gets a
// resolver for them.
func TestRuntimeDNSAcrossReloads(t *testing.T) {
	b := runtimeBuilder{log: zerolog.Nop(), dialer: &net.Dialer{}}
	set := Settings{Delivery: config.Default().Delivery, Hostname: "relay.test"}
	set.DNS.Servers = []string{"127.0.0.1:5353"}
	first, err := b.runtime(set, nil)
	if err != nil {
		t.Fatal(err)
	}
	set.MaxPerDestination++
	same, err := b.runtime(set, first)
	if err != nil {
		t.Fatal(err)
	}
	if same.res != first.res {
		t.Error("unchanged delivery.dns: the resolver (and its cache) was replaced")
	}
	set.DNS.Servers = []string{"127.0.0.1:5354"}
	moved, err := b.runtime(set, same)
	if err != nil {
		t.Fatal(err)
	}
	if moved.res == first.res {
		t.Error("changed delivery.dns.servers: the old resolver was kept")
	}
}
