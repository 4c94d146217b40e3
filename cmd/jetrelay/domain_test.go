package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jetrelay/jetrelay/relay/domaincheck"
	"github.com/jetrelay/jetrelay/relay/relaytest"
)

// domainSetup is a fake DNS for shop.test, sent from 203.0.113.5 as
// mail.shop.test, and a config that points at it.
type domainSetup struct {
	config string
}

// newDomainSetup serves a good zone, changed by edit (if not nil) first;
// extraDelivery is added to the config's delivery section.
func newDomainSetup(t *testing.T, extraDelivery string, edit func(*relaytest.Zone)) domainSetup {
	t.Helper()
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "s1.pem")
	rc, line, errOut := runCmd(t, "dkim", "keygen", "--domain", "shop.test", "--selector", "s1", "--algo", "ed25519",
		"--out", keyFile)
	if rc != 0 {
		t.Fatalf("keygen: %s", errOut)
	}
	_, txt, _ := strings.Cut(strings.TrimSpace(line), "IN TXT ")
	z := relaytest.NewZone()
	z.AddTXTRecords("shop.test", "v=spf1 ip4:203.0.113.5 -all")
	z.AddTXTRecords("s1._domainkey.shop.test", strings.Trim(txt, `"`))
	z.AddTXTRecords("_dmarc.shop.test", "v=DMARC1; p=quarantine")
	z.AddA("mail.shop.test", "203.0.113.5")
	z.AddTXTRecords("mail.shop.test", "v=spf1 a -all")
	z.AddPTR("203.0.113.5", "mail.shop.test")
	z.AddMX("shop.test", 10, "mail.shop.test")
	if edit != nil {
		edit(z)
	}
	addr := relaytest.FakeDNS(t, z)
	cfg := fmt.Sprintf("hostname: mail.shop.test\ndelivery:\n%s  dns: {servers: [%q], timeout: 2s}\n"+
		"dkim:\n  keys:\n    - {domain: shop.test, selector: s1, key: %s}\n", extraDelivery, addr, keyFile)
	p := filepath.Join(dir, "jetrelay.yaml")
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return domainSetup{config: p}
}

// domainJSON runs domain check --json and decodes the report.
func domainJSON(t *testing.T, args ...string) (int, domaincheck.Report) {
	t.Helper()
	rc, out, errOut := runCmd(t, append([]string{"domain", "check", "--json"}, args...)...)
	var rep domaincheck.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("rc=%d: %v\n%s\n%s", rc, err, out, errOut)
	}
	return rc, rep
}

func TestDomainCheckGood(t *testing.T) {
	t.Parallel()
	s := newDomainSetup(t, "", nil)
	rc, out, errOut := runCmd(t, "domain", "check", "shop.test", "--config", s.config, "--ip", "203.0.113.5")
	if rc != 0 || !strings.HasSuffix(out, " OK, 0 WARN, 0 FAIL\n") {
		t.Fatalf("rc=%d\n%s\n%s", rc, out, errOut)
	}
	for _, want := range []string{"outbound addresses 203.0.113.5 (--ip)",
		"OK    spf                   shop.test for 203.0.113.5: authorises 203.0.113.5 (pass)",
		"OK    dkim                  s1._domainkey.shop.test: matches the ed25519 key",
		"OK    dmarc                 _dmarc.shop.test: p=quarantine",
		"OK    ehlo_reverse          203.0.113.5: PTR mail.shop.test"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	rc, rep := domainJSON(t, "--config", s.config, "--ip", "203.0.113.5", "Shop.Test.")
	if rc != 0 || rep.Domain != "shop.test" || len(rep.Findings) < 8 || rep.Failed() {
		t.Fatalf("rc=%d %+v", rc, rep)
	}
	_, out, _ = runCmd(t, "domain", "check", "shop.test", "--json", "--config", s.config, "--ip", "203.0.113.5")
	for _, key := range []string{`"domain": "shop.test"`, `"hostname": "mail.shop.test"`, `"ips": [`,
		`"ip_source": "--ip"`, `"check": "dmarc_spf_alignment"`, `"subject": "203.0.113.5"`, `"status": "OK"`,
		`"detail": "PTR mail.shop.test"`} {
		if !strings.Contains(out, key) {
			t.Errorf("JSON lacks %s:\n%s", key, out)
		}
	}
}

// Missing PTR and DMARC: exit 1, each a FAIL with its fix; without --ip the
// configured delivery.source_ip is the outbound address.
func TestDomainCheckFailures(t *testing.T) {
	t.Parallel()
	s := newDomainSetup(t, "", func(z *relaytest.Zone) {
		z.PTR = map[string][]string{}
		delete(z.TXT, "_dmarc.shop.test")
	})
	rc, rep := domainJSON(t, "shop.test", "--config", s.config, "--ip", "203.0.113.5")
	if rc != 1 || !rep.Failed() {
		t.Fatalf("rc=%d %+v", rc, rep)
	}
	got := map[string]domaincheck.Status{}
	for _, f := range rep.Findings {
		if f.Status != domaincheck.OK && f.Fix == "" {
			t.Errorf("no fix: %+v", f)
		}
		got[f.Check] = f.Status
	}
	if got[domaincheck.CheckEHLOReverse] != domaincheck.Fail || got[domaincheck.CheckDMARC] != domaincheck.Fail {
		t.Fatalf("statuses %v", got)
	}
	rc, out, _ := runCmd(t, "domain", "check", "shop.test", "--config", s.config, "--ip", "203.0.113.5")
	if rc != 1 || !strings.Contains(out, "FAIL  ehlo_reverse          203.0.113.5: no PTR record") ||
		!strings.Contains(out, "      fix: ask whoever owns 203.0.113.5") {
		t.Fatalf("rc=%d\n%s", rc, out)
	}

	s2 := newDomainSetup(t, "  source_ip: 203.0.113.5\n", nil)
	rc, rep = domainJSON(t, "shop.test", "--config", s2.config)
	if rc != 0 || rep.IPSource != "delivery.source_ip" || len(rep.IPs) != 1 || rep.IPs[0] != "203.0.113.5" {
		t.Fatalf("rc=%d %+v", rc, rep)
	}
}

// Without a known outbound address the check says so (a WARN, exit 0).
func TestDomainCheckNoAddress(t *testing.T) {
	t.Parallel()
	s := newDomainSetup(t, "", nil)
	rc, out, _ := runCmd(t, "domain", "check", "shop.test", "--config", s.config)
	if rc != 0 || !strings.Contains(out, "WARN  outbound_address") || !strings.Contains(out, "fix: pass --ip ADDR") {
		t.Fatalf("rc=%d\n%s", rc, out)
	}
}

func TestDomainCheckUsage(t *testing.T) {
	t.Parallel()
	s := newDomainSetup(t, "", nil)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"domain"}, "Usage: jetrelay domain check"},
		{[]string{"domain", "frob"}, "unknown command"},
		{[]string{"domain", "check", "--config", s.config}, "want one DOMAIN"},
		{[]string{"domain", "check", "shop.test"}, "want one DOMAIN, --config FILE"},
		{[]string{"domain", "check", "shop.test", "--config", s.config, "--ip", "mail.shop.test"}, "not an IP address"},
		{[]string{"domain", "check", "bad_name!.test", "--config", s.config}, "invalid domain name"},
		{append([]string{"domain", "check", "shop.test", "--config", s.config},
			strings.Split(strings.Repeat("--ip 192.0.2.1 ", 17), " ")[:34]...), "at most 16 addresses"},
	}
	for _, tc := range cases {
		rc, _, errOut := runCmd(t, tc.args...)
		if rc != 2 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: rc=%d %q, want 2 and %q", tc.args, rc, errOut, tc.want)
		}
	}
}
