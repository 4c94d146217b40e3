package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/devtools/testport"
	"github.com/jetrelay/jetrelay/relay/relaytest"
	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"
)

// BenchmarkServeMessage is one 4 KiB message through `jetrelay serve` in
// this process, as scripts/bench runs it (embedded JetStream with sync
// always, STARTTLS + AUTH submission over 4 connections, a "*" route to a
// fake MX without TLS, events stream, stats and TLS-RPT counting, no
// DKIM): submitted, stored, delivered, acknowledged. allocs/op and B/op
// count every allocation in the process per message: the relay's, and the
// test's SMTP client and fake MX (a small share); cpu-ms/msg is the
// process's CPU time (user + system) per message, client and MX included.
// Compare runs of the same machine: `go test -run '^$' -bench
// ServeMessage -benchtime 2000x ./cmd/jetrelay/`.
func BenchmarkServeMessage(b *testing.B) {
	mx := relaytest.FakeMX(b)
	cfgPath, subAddr := writeBenchConfig(b, net.JoinHostPort(mx.IP, strconv.Itoa(mx.Port)))
	cfg, err := config.Load(cfgPath)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, zerolog.Nop(), stdio{out: os.Stderr, err: os.Stderr}) }()
	b.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			b.Error("serve did not stop")
		}
	})
	clients := benchClients(b, subAddr, 4)
	body := benchBody(4096)
	send := func(n int) {
		var wg sync.WaitGroup
		for i, c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := i; j < n; j += len(clients) {
					rcpt := fmt.Sprintf("user%d@example.test", j)
					if err := c.SendMail("bench@example.com", []string{rcpt}, strings.NewReader(body)); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
	}
	waitMX := func(n int) {
		deadline := time.Now().Add(2 * time.Minute)
		for len(mx.Messages()) < n && !b.Failed() {
			if time.Now().After(deadline) {
				b.Fatalf("%d of %d messages delivered", len(mx.Messages()), n)
			}
			time.Sleep(2 * time.Millisecond) // polling the fake MX, not synchronising the relay
		}
	}
	const warm = 50
	send(warm)
	waitMX(warm)
	cpu0 := processCPU()
	b.ReportAllocs()
	b.ResetTimer()
	send(b.N)
	waitMX(warm + b.N)
	b.StopTimer()
	b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/1000/float64(b.N), "cpu-ms/msg")
}

// processCPU is this process's user + system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func benchBody(size int) string {
	var sb strings.Builder
	sb.WriteString("From: <bench@example.com>\r\nTo: <user@example.test>\r\nSubject: bench\r\n\r\n")
	for sb.Len() < size {
		sb.WriteString(strings.Repeat("x", 76) + "\r\n")
	}
	return sb.String()
}

// benchClients are n authenticated submission connections.
func benchClients(b *testing.B, addr string, n int) []*smtp.Client {
	var out []*smtp.Client
	deadline := time.Now().Add(60 * time.Second)
	for len(out) < n {
		// Loopback, the relay's self-signed certificate of this run.
		c, err := smtp.DialStartTLS(addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec
		if err != nil {
			if time.Now().After(deadline) {
				b.Fatal(err)
			}
			time.Sleep(50 * time.Millisecond) // serve is starting: its listener is not up yet
			continue
		}
		if err := c.Auth(sasl.NewPlainClient("", "bench", "bench-pass-1")); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = c.Close() })
		out = append(out, c)
	}
	return out
}

func writeBenchConfig(b *testing.B, mxAddr string) (string, string) {
	dir := b.TempDir()
	hash, err := bcrypt.GenerateFromPassword([]byte("bench-pass-1"), bcrypt.MinCost)
	if err != nil {
		b.Fatal(err)
	}
	subAddr := testport.Addr(b)
	yaml := fmt.Sprintf(`hostname: relay.bench.test
data_dir: %s
nats: {listen: ""}
submission:
  listeners: [{addr: "%s", tls: starttls}]
  users: [{name: bench, password_hash: "%s", allowed_from: [example.com]}]
delivery:
  routes: [{domains: ["*"], host: "%s", tls: none}]
admin: {listen: ""}
log: {level: warn}
`, filepath.Join(dir, "data"), subAddr, hash, mxAddr)
	path := filepath.Join(dir, "jetrelay.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		b.Fatal(err)
	}
	return path, subAddr
}
