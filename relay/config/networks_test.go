package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"gopkg.in/yaml.v3"

	"github.com/jetrelay/jetrelay/relay/netguard"
)

func TestDeniedNetworksDefault(t *testing.T) {
	c, err := Parse([]byte("hostname: x\n"))
	if err != nil {
		t.Fatal(err)
	}
	g, err := c.Delivery.NetGuard()
	if err != nil {
		t.Fatal(err)
	}
	samePrefix := cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })
	if diff := cmp.Diff(netguard.DefaultDenied(), g.Denied(), samePrefix); diff != "" {
		t.Fatalf("default denied networks (-want +got):\n%s", diff)
	}
	if len(c.Delivery.AllowedNetworks) != 0 {
		t.Fatalf("allowed networks default to %v, want none", c.Delivery.AllowedNetworks)
	}
	if g.Check(netip.MustParseAddr("127.0.0.1")) == nil {
		t.Fatal("loopback is dialled by default")
	}
}

func TestDeniedNetworksReplaceDefault(t *testing.T) {
	c, err := Parse([]byte("hostname: x\ndelivery:\n" +
		"  denied_networks: [10.0.0.0/8, \"::1\"]\n  allowed_networks: [10.1.0.0/16]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"10.0.0.0/8", "::1"}, c.Delivery.DeniedNetworks); diff != "" {
		t.Fatalf("denied (-want +got):\n%s", diff)
	}
	g, err := c.Delivery.NetGuard()
	if err != nil {
		t.Fatal(err)
	}
	for addr, denied := range map[string]bool{"127.0.0.1": false, "10.2.0.1": true, "10.1.0.1": false, "::1": true} {
		if (g.Check(netip.MustParseAddr(addr)) != nil) != denied {
			t.Errorf("%s: denied should be %v", addr, denied)
		}
	}
}

func TestNetworksProblems(t *testing.T) {
	yaml := "hostname: x\ndelivery:\n  denied_networks:\n    - 10.0.0.0/8\n    - 10.1.2.3/8\n    - intranet\n" +
		"  allowed_networks: [\"fe80::1%eth0\"]\n"
	_, err := Parse([]byte(yaml))
	if err == nil {
		t.Fatal("no error")
	}
	for _, w := range []string{
		`line 5: delivery.denied_networks[1]: "10.1.2.3/8" has bits set after the prefix length; did you mean 10.0.0.0/8?`,
		`line 6: delivery.denied_networks[2]: "intranet" is neither an IP address nor a prefix`,
		`line 7: delivery.allowed_networks[0]: "fe80::1%eth0": a network cannot have an IPv6 zone`,
	} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q\ndoes not contain %q", err, w)
		}
	}
}

// TestExampleShowsDefaultDenied keeps the commented default list in
// configs/jetrelay.yaml equal to netguard.DefaultDenied.
func TestExampleShowsDefaultDenied(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "configs", "jetrelay.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var block []string
	for _, line := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "# denied_networks:") {
			block = append(block, strings.TrimPrefix(trimmed, "# "))
		} else if len(block) > 0 && strings.HasPrefix(trimmed, "#   ") {
			block = append(block, strings.TrimPrefix(trimmed, "#"))
		} else if len(block) > 0 {
			break
		}
	}
	var got struct {
		DeniedNetworks []string `yaml:"denied_networks"`
	}
	if err := yaml.Unmarshal([]byte(strings.Join(block, "\n")), &got); err != nil {
		t.Fatalf("commented denied_networks in configs/jetrelay.yaml: %v\n%s", err, strings.Join(block, "\n"))
	}
	if diff := cmp.Diff(defaultDeniedNetworks(), got.DeniedNetworks); diff != "" {
		t.Fatalf("configs/jetrelay.yaml shows a different default (-want +got):\n%s", diff)
	}
}
