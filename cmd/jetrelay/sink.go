package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os/signal"
	"syscall"
	"time"

	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/devtools/sink"
)

const sinkAbout = `Runs a development SMTP sink (like Postfix's smtp-sink): accepts every
message on a loopback port, counts messages, recipients, bytes and connections,
throws the bodies away (or saves them with --dump) and prints a rate line every
second on stderr. --tempfail/--permfail answer an exact share of RCPTs (or
DATA) with 451 4.7.1 / 550 5.1.1. --http serves GET /count, POST /reset and
GET /wait?n=N&timeout=60s (arrival time of the Nth message since the reset).
--expect N prints the Nth message's arrival time and exits.`

// sinkHTTPTimeout bounds reading a control request's headers.
const sinkHTTPTimeout = 10 * time.Second

type sinkFlags struct {
	opts               sink.Options
	useTLS             bool
	cert, key          string
	temp, perm, failAt string
	maxSize, httpAddr  string
	quiet              bool
	expect             int64
	lifetime           time.Duration
}

func parseSinkFlags(args []string, sio stdio) (*sinkFlags, int, bool) {
	f := &sinkFlags{}
	fs := newFlags("sink", "sink [flags]", sinkAbout, sio)
	fs.StringVar(&f.opts.Addr, "listen", "127.0.0.1:2525", "SMTP listen `address`")
	fs.BoolVar(&f.opts.AllowRemote, "allow-remote", false, "allow non-loopback listen addresses")
	fs.BoolVar(&f.useTLS, "tls", false, "offer STARTTLS (a self-signed certificate unless --cert/--key)")
	fs.StringVar(&f.cert, "cert", "", "PEM certificate for STARTTLS (implies --tls)")
	fs.StringVar(&f.key, "key", "", "PEM private key for --cert")
	fs.StringVar(&f.temp, "tempfail", "0%", "share answered 451 4.7.1, e.g. 5%")
	fs.StringVar(&f.perm, "permfail", "0%", "share answered 550 5.1.1, e.g. 1%")
	fs.StringVar(&f.failAt, "fail-at", "rcpt", "where failures are injected: rcpt | data")
	fs.Uint64Var(&f.opts.Seed, "seed", 0, "offset of the failure counter")
	fs.StringVar(&f.opts.DumpDir, "dump", "", "save every accepted message in this `directory`")
	fs.StringVar(&f.maxSize, "max-size", "64MiB", "largest message accepted (SIZE)")
	fs.StringVar(&f.httpAddr, "http", "", "control HTTP `address` (e.g. 127.0.0.1:2526; empty: none)")
	fs.Int64Var(&f.expect, "expect", 0, "exit after this many messages, printing the last one's arrival time")
	fs.DurationVar(&f.lifetime, "max-lifetime", 0, "exit after this long (0: until SIGINT/SIGTERM)")
	fs.BoolVar(&f.quiet, "quiet", false, "no rate lines")
	if rc, ok := parseFlags(fs, args); !ok {
		return nil, rc, false
	}
	if err := f.finish(); err != nil {
		fmt.Fprintf(sio.err, "jetrelay sink: %v\n", err)
		return nil, 2, false
	}
	return f, 0, true
}

// finish parses the flags that need parsing, reporting every problem.
func (f *sinkFlags) finish() error {
	var errs []error
	var err error
	if f.opts.TempFail, err = sink.ParseShare(f.temp); err != nil {
		errs = append(errs, fmt.Errorf("--tempfail: %w", err))
	}
	if f.opts.PermFail, err = sink.ParseShare(f.perm); err != nil {
		errs = append(errs, fmt.Errorf("--permfail: %w", err))
	}
	size, err := config.ParseSize(f.maxSize)
	if err != nil {
		errs = append(errs, fmt.Errorf("--max-size: %w", err))
	}
	f.opts.MaxMessageBytes = int64(size)
	f.opts.FailAt = sink.FailAt(f.failAt)
	if (f.cert == "") != (f.key == "") {
		errs = append(errs, errors.New("--cert and --key go together"))
	}
	if f.httpAddr != "" {
		if err := sink.CheckListenAddr(f.httpAddr, f.opts.AllowRemote); err != nil {
			errs = append(errs, fmt.Errorf("--http: %w", err))
		}
	}
	if f.expect < 0 || f.lifetime < 0 {
		errs = append(errs, errors.New("--expect and --max-lifetime must not be negative"))
	}
	return errors.Join(errs...)
}

func (f *sinkFlags) tlsConfig() (*tls.Config, error) {
	switch {
	case f.cert != "":
		return sink.LoadTLS(f.cert, f.key)
	case f.useTLS:
		return sink.SelfSignedTLS()
	}
	return nil, nil
}

func runSink(args []string, sio stdio) int {
	return sinkMain(context.Background(), args, sio, nil)
}

// sinkMain runs the sink until ctx ends, a signal, --expect or
// --max-lifetime; ready (for tests) gets the SMTP and HTTP addresses.
func sinkMain(ctx context.Context, args []string, sio stdio, ready func(smtpAddr, httpAddr string)) int {
	f, rc, ok := parseSinkFlags(args, sio)
	if !ok {
		return rc
	}
	tc, err := f.tlsConfig()
	if err != nil {
		fmt.Fprintf(sio.err, "jetrelay sink: %v\n", err)
		return 1
	}
	f.opts.TLS = tc
	f.opts.ErrorLog = log.New(sio.err, "jetrelay sink: ", log.LstdFlags)
	if f.quiet {
		f.opts.ErrorLog = nil
	}
	s, err := sink.New(f.opts)
	if err == nil {
		err = s.Start()
	}
	if err != nil {
		fmt.Fprintf(sio.err, "jetrelay sink: %v\n", err)
		return 1
	}
	defer s.Close()
	httpAddr, stopHTTP, err := serveSinkHTTP(s, f.httpAddr)
	if err != nil {
		fmt.Fprintf(sio.err, "jetrelay sink: %v\n", err)
		return 1
	}
	defer stopHTTP()
	if !f.quiet {
		fmt.Fprintf(sio.err, "jetrelay sink: smtp %s (starttls %v) http %s\n", s.Addr(), tc != nil, orNone(httpAddr))
	}
	if ready != nil {
		ready(s.Addr().String(), httpAddr)
	}
	return waitSink(ctx, s, f, sio)
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// serveSinkHTTP starts the control surface on addr ("" = none).
func serveSinkHTTP(s *sink.Sink, addr string) (string, func(), error) {
	if addr == "" {
		return "", func() {}, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("--http: %w", err)
	}
	hs := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: sinkHTTPTimeout}
	go func() { _ = hs.Serve(ln) }()
	return ln.Addr().String(), func() { _ = hs.Close() }, nil
}

// waitSink prints rate lines until the sink should stop, then the totals.
func waitSink(ctx context.Context, s *sink.Sink, f *sinkFlags, sio stdio) int {
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if f.lifetime > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, f.lifetime)
		defer cancel()
	}
	expected := make(chan time.Time, 1)
	if f.expect > 0 {
		go func() {
			if at, err := s.WaitFor(ctx, f.expect); err == nil {
				expected <- at
			}
		}()
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var last sink.Stats
	for {
		select {
		case <-ctx.Done():
			printTotals(sio, s.Stats(), f.quiet)
			return 0
		case at := <-expected:
			st := s.Stats()
			fmt.Fprintf(sio.out, "expect_reached=%d nth_unix_ns=%d first_unix_ns=%d messages=%d bytes=%d\n",
				f.expect, at.UnixNano(), st.FirstUnixNs, st.Messages, st.Bytes)
			printTotals(sio, st, f.quiet)
			return 0
		case <-tick.C:
			if st := s.Stats(); !f.quiet && st != last {
				fmt.Fprintf(sio.err, "jetrelay sink: %d msg/s %.2f MB/s | "+
					"%d msgs %d rcpts %.1f MB %d conns %d tempfail %d permfail\n",
					max(st.Messages-last.Messages, 0), float64(max(st.Bytes-last.Bytes, 0))/1e6,
					st.Messages, st.Rcpts, float64(st.Bytes)/1e6, st.Connections, st.TempFailed, st.PermFailed)
				last = st
			}
		}
	}
}

func printTotals(sio stdio, st sink.Stats, quiet bool) {
	if quiet {
		return
	}
	fmt.Fprintf(sio.err, "jetrelay sink: exiting: %d msgs %d rcpts %d bytes %d conns %d tempfail %d permfail\n",
		st.Messages, st.Rcpts, st.Bytes, st.Connections, st.TempFailed, st.PermFailed)
}
