package dnsclient

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/relay/relaytest"
	"github.com/miekg/dns"
)

func TestServers(t *testing.T) {
	c, err := New(Options{Servers: []string{"192.0.2.1", "::1", "127.0.0.1:5353"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.Servers(), " "); got != "192.0.2.1:53 [::1]:53 127.0.0.1:5353" {
		t.Errorf("servers %q", got)
	}
	for _, bad := range []string{"dns.example", "dns.example:53", "1.2.3.4:x:y"} {
		if _, err := New(Options{Servers: []string{bad}}); err == nil {
			t.Errorf("server %q accepted", bad)
		}
	}
	if _, err := New(Options{Servers: []string{"192.0.2.1"}, LoopbackOnly: true}); err == nil {
		t.Error("LoopbackOnly accepted 192.0.2.1")
	}
	conf := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(conf, []byte("nameserver 127.0.0.53\nnameserver ::1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err = New(Options{ResolvConf: conf})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.Servers(), " "); got != "127.0.0.53:53 [::1]:53" {
		t.Errorf("servers from resolv.conf %q", got)
	}
	if _, err := New(Options{ResolvConf: filepath.Join(t.TempDir(), "missing")}); err == nil {
		t.Error("no servers and no resolv.conf accepted")
	}
}

// A server that fails is skipped; NXDOMAIN is an answer, not a failure;
// a truncated UDP answer is asked again over TCP.
func TestQuery(t *testing.T) {
	failing := relaytest.NewZone()
	for _, name := range []string{"big.example", "missing.example"} {
		failing.SetServFail(name, true)
	}
	servfail := relaytest.FakeDNS(t, failing)
	zone := relaytest.NewZone()
	for i := 0; i < 40; i++ { // more than fits a 1232-octet UDP answer
		zone.AddTXT("big.example", fmt.Sprintf("%02d", i)+strings.Repeat("x", 60))
	}
	zone.SetTruncate("big.example", true)
	good := relaytest.FakeDNS(t, zone)
	c, err := New(Options{Servers: []string{servfail, good}, Timeout: 5 * time.Second, LoopbackOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	in, err := c.Query(ctx, "big.example", dns.TypeTXT)
	if err != nil {
		t.Fatal(err)
	}
	if len(in.Answer) != 40 || in.Truncated {
		t.Fatalf("%d answers: the truncated UDP answer was not asked again over TCP", len(in.Answer))
	}
	if zone.Queries("big.example", dns.TypeTXT) != 2 || failing.Queries("big.example", dns.TypeTXT) != 1 {
		t.Fatalf("queries: %d to the good server (UDP, then TCP), %d to the failing one; want 2 and 1",
			zone.Queries("big.example", dns.TypeTXT), failing.Queries("big.example", dns.TypeTXT))
	}
	in, err = c.Query(ctx, "missing.example", dns.TypeTXT)
	if err != nil || in.Rcode != dns.RcodeNameError || zone.Queries("missing.example", dns.TypeTXT) != 1 {
		t.Fatalf("NXDOMAIN: %v, %v", in, err)
	}
	only, err := New(Options{Servers: []string{servfail}, LoopbackOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := only.Query(ctx, "big.example", dns.TypeTXT); err == nil || !strings.Contains(err.Error(), "SERVFAIL") {
		t.Fatalf("only a failing server: %v, want a SERVFAIL error", err)
	}
}
