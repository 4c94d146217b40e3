package main

import (
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"sync/atomic"

	"github.com/jetrelay/jetrelay/dkim"
	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/dnsclient"
	"github.com/jetrelay/jetrelay/relay/netguard"
	"github.com/jetrelay/jetrelay/relay/tlsrpt"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// tlsrptRun is TLS-RPT in the running relay (delivery.tls_rpt): the
// session counter and the daily reporter, each in its own goroutine, and
// the DKIM signer a reload swaps in.
type tlsrptRun struct {
	signer atomic.Pointer[dkim.Signer]
	cancel context.CancelFunc
	done   chan struct{}
}

// signerNow signs with the signer of the running configuration.
type signerNow struct{ r *tlsrptRun }

func (s signerNow) Sign(msg []byte) ([]byte, string, error) { return s.r.signer.Load().Sign(msg) }

// setSigner hands a reloaded DKIM signer to the reporter (nil-safe).
func (t *tlsrptRun) setSigner(s *dkim.Signer) {
	if t != nil && s != nil {
		t.signer.Store(s)
	}
}

// stop ends both goroutines and waits for them (nil-safe).
func (t *tlsrptRun) stop() {
	if t == nil || t.cancel == nil {
		return
	}
	t.cancel()
	<-t.done
	<-t.done
}

// startTLSRPT opens the bucket (waiting while JetStream is not ready),
// joins the shared counting consumer and starts the reporter; with
// delivery.tls_rpt.enabled false it does nothing.
func (r *relay) startTLSRPT(ctx context.Context, signer *dkim.Signer) error {
	t := &tlsrptRun{}
	r.tlsrpt = t
	if !r.cfg.Delivery.TLSRPT.Enabled {
		return nil
	}
	t.signer.Store(signer)
	var kv jetstream.KeyValue
	var counter *tlsrpt.Counter
	err := r.q.Await(ctx, "bucket "+tlsrpt.Bucket, func(ctx context.Context) error {
		var err error
		if kv, err = tlsrpt.OpenBucket(ctx, r.q.JetStream(), r.q.Replicas()); err != nil {
			return err
		}
		counter, err = tlsrpt.NewCounter(ctx, tlsrptCounterOptions(r.cfg, r.q.JetStream(), kv, r.log))
		return err
	})
	if err != nil {
		return fmt.Errorf("tls_rpt: %w", err)
	}
	o, err := tlsrptReporterOptions(r.cfg, kv, r.stsKV, r.q, r.log)
	if err != nil {
		return err
	}
	o.Signer, o.Node = signerNow{t}, shapingNode(r.cfg)
	rep, err := tlsrpt.NewReporter(o)
	if err != nil {
		return err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	t.cancel, t.done = cancel, make(chan struct{}, 2)
	go func() { _ = counter.Run(runCtx); t.done <- struct{}{} }()
	go func() { _ = rep.Run(runCtx); t.done <- struct{}{} }()
	return nil
}

// tlsrptCounterOptions: egress sources' addresses name sending-mta-ip.
func tlsrptCounterOptions(cfg *config.Config, js jetstream.JetStream, kv jetstream.KeyValue, log zerolog.Logger) tlsrpt.CounterOptions {
	ips := map[string]string{}
	for _, s := range cfg.Delivery.Sources {
		ips[s.Name] = s.Address
	}
	return tlsrpt.CounterOptions{JetStream: js, KV: kv, SourceIPs: ips, DefaultIP: cfg.Delivery.SourceIP, Logger: log}
}

// tlsrptReporterOptions builds the reporter's options from the
// configuration (without Signer and Node): delivery.dns for the lookups,
// delivery.denied_networks and delivery.tls.ca_file for https endpoints.
func tlsrptReporterOptions(cfg *config.Config, kv, stsKV jetstream.KeyValue, q *queue.Queue, log zerolog.Logger) (tlsrpt.ReporterOptions, error) {
	d := cfg.Delivery
	g, err := netguard.Parse(d.DeniedNetworks, d.AllowedNetworks)
	if err != nil {
		return tlsrpt.ReporterOptions{}, fmt.Errorf("tls_rpt: %w", err)
	}
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	if d.TLS.CAFile != "" {
		pem, err := os.ReadFile(d.TLS.CAFile)
		if err != nil {
			return tlsrpt.ReporterOptions{}, fmt.Errorf("tls_rpt: delivery.tls.ca_file: %w", err)
		}
		roots.AppendCertsFromPEM(pem)
	}
	return tlsrpt.ReporterOptions{KV: kv, STS: stsKV, Queue: q, Guard: g, Roots: roots,
		DNS:  dnsclient.Options{Servers: d.DNS.Servers, Timeout: d.DNS.Timeout.D()},
		From: cfg.TLSRPTFrom(), OrgName: d.TLSRPT.OrgName, Contact: d.TLSRPT.Contact, TLSAPort: d.Port, Logger: log}, nil
}
