package dnsclient

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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

// serve runs a DNS server on loopback (UDP and TCP on one port) answering
// with h; it returns the address.
func serve(t *testing.T, h dns.HandlerFunc) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		go func() { _ = s.ActivateAndServe() }()
		t.Cleanup(func() { _ = s.Shutdown() })
	}
	return pc.LocalAddr().String()
}

// A server that fails is skipped; NXDOMAIN is an answer, not a failure;
// a truncated UDP answer is asked again over TCP.
func TestQuery(t *testing.T) {
	servfail := serve(t, func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeServerFailure)
		_ = w.WriteMsg(m)
	})
	good := serve(t, func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		if r.Question[0].Name != "big.example." {
			m.SetRcode(r, dns.RcodeNameError)
			_ = w.WriteMsg(m)
			return
		}
		_, tcp := w.RemoteAddr().(*net.TCPAddr)
		n := 1
		if tcp {
			n = 40 // more than fits a 1232-octet UDP answer
		}
		for i := 0; i < n; i++ {
			rr, _ := dns.NewRR("big.example. 300 IN TXT \"" + strings.Repeat("x", 60) + "\"")
			m.Answer = append(m.Answer, rr)
		}
		m.Truncated = !tcp
		_ = w.WriteMsg(m)
	})
	c, err := New(Options{Servers: []string{servfail, good}, Timeout: 5 * time.Second, LoopbackOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	in, err := c.Query(ctx, "big.example", dns.TypeTXT)
	if err != nil {
		t.Fatal(err)
	}
	if len(in.Answer) != 40 {
		t.Fatalf("%d answers: the truncated UDP answer was not asked again over TCP", len(in.Answer))
	}
	in, err = c.Query(ctx, "missing.example", dns.TypeTXT)
	if err != nil || in.Rcode != dns.RcodeNameError {
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
