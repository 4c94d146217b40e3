// Package loadgen is an SMTP submission load generator, in the manner of
// `nats bench` and `redis-benchmark`: Options.Conns connections, each reused
// for many messages (MAIL, RCPT, DATA back to back, no RSET unless a
// transaction failed half-way), submit Options.Messages realistic messages of
// Options.Size bytes.
//
// It promises:
//
//   - Accept latency is measured like the peers' harness: from sending MAIL
//     FROM to the reply to the end of DATA, per message, recorded without
//     locks or allocation in per-worker log-linear histograms (≤1.6% error).
//   - Failures are counted by reply code ("451", "550"); errors without a
//     reply (connection loss, TLS, timeouts) count as "net". A 421 reply or a
//     connection loss closes the connection and the next message reconnects.
//   - Every run is bounded: by Messages, by Duration (no new message starts
//     after it; connections still busy are closed a short grace later), by
//     Timeout per command, and by giving up on a connection that fails to
//     open maxConnectFailures times in a row.
//   - Only loopback servers, unless Options.AllowRemote is set.
//
// Each message is rendered from a per-size template into a reused
// per-worker buffer, so a worker allocates little beyond what go-smtp does.
package loadgen

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// TLSMode is how the client secures the connection.
type TLSMode string

// TLS modes.
const (
	TLSNone     TLSMode = "none"
	TLSStartTLS TLSMode = "starttls"
	TLSImplicit TLSMode = "implicit"
)

// Limits and defaults.
const (
	MinSize          = 512
	MaxSize          = 64 << 20
	MaxConns         = 1000
	MaxDuration      = 24 * time.Hour
	DefaultDuration  = 10 * time.Minute
	DefaultTimeout   = time.Minute
	DefaultEHLO      = "loadgen.jetrelay.test"
	maxGrace         = 5 * time.Second
	maxConnectErrors = 5
)

// Options describe one run. Zero Duration, Timeout and EHLO get defaults.
type Options struct {
	Server      string // host:port
	AllowRemote bool   // permit a non-loopback server
	TLS         TLSMode
	Insecure    bool           // skip certificate verification
	RootCAs     *x509.CertPool // extra trust (nil: the system's)
	User        string         // AUTH PLAIN user; "" = no AUTH
	Password    string
	Messages    int    // total messages to submit (>= 1)
	Conns       int    // connections (>= 1, at most MaxConns)
	Size        int    // bytes per message, headers included
	From        string // envelope and header sender
	Rcpt        string // recipient pattern; {n} is the message number (1-based)
	Duration    time.Duration
	Timeout     time.Duration // per SMTP command and per end-of-DATA reply
	EHLO        string
}

// Result summarises a run; it is also the --json output.
type Result struct {
	Server            string           `json:"server"`
	TLS               TLSMode          `json:"tls"`
	Messages          int              `json:"n"`
	Conns             int              `json:"c"`
	Size              int              `json:"size"`
	Sent              int64            `json:"sent"`
	Failed            int64            `json:"failed"`
	FailedByCode      map[string]int64 `json:"failed_by_code"`
	Unsent            int64            `json:"unsent"`
	Bytes             int64            `json:"bytes"`
	Connects          int64            `json:"connects"`
	ElapsedS          float64          `json:"elapsed_s"`
	MsgsPerS          float64          `json:"msgs_per_s"`
	MBPerS            float64          `json:"mb_per_s"`
	P50Ms             float64          `json:"p50_ms"`
	P90Ms             float64          `json:"p90_ms"`
	P99Ms             float64          `json:"p99_ms"`
	MaxMs             float64          `json:"max_ms"`
	MeanMs            float64          `json:"mean_ms"`
	StartUnixNs       int64            `json:"start_unix_ns"`
	EndUnixNs         int64            `json:"end_unix_ns"`
	StoppedByDuration bool             `json:"stopped_by_duration"`
	FirstError        string           `json:"first_error,omitempty"`
}

// Bench is one configured run.
type Bench struct {
	opts Options
	addr string // resolved host:port actually dialled
	tmpl *template
	rcpt rcptPattern

	next  atomic.Int64 // next message number to take (0-based)
	done  atomic.Int64 // messages finished, ok or failed
	sent  atomic.Int64
	conns tracker
}

// New checks opts (including that the server is loopback) and prepares the
// message template.
func New(ctx context.Context, opts Options) (*Bench, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	addr, err := resolve(ctx, opts.Server, opts.AllowRemote)
	if err != nil {
		return nil, err
	}
	runID := fmt.Sprintf("%x", time.Now().UnixNano())
	return &Bench{
		opts: opts,
		addr: addr,
		tmpl: newTemplate(opts.Size, opts.From, runID),
		rcpt: newRcptPattern(opts.Rcpt),
	}, nil
}

func (o *Options) validate() error {
	var errs []error
	switch o.TLS {
	case TLSNone, TLSStartTLS, TLSImplicit:
	default:
		errs = append(errs, fmt.Errorf("tls %q: want none, starttls or implicit", o.TLS))
	}
	if o.Messages < 1 {
		errs = append(errs, errors.New("messages must be >= 1"))
	}
	if o.Conns < 1 || o.Conns > MaxConns {
		errs = append(errs, fmt.Errorf("connections must be in 1..%d", MaxConns))
	}
	if o.Size < MinSize || o.Size > MaxSize {
		errs = append(errs, fmt.Errorf("size must be in %d..%d bytes", MinSize, MaxSize))
	}
	if o.From == "" || o.Rcpt == "" {
		errs = append(errs, errors.New("from and rcpt must be set"))
	}
	if o.Duration < 0 || o.Duration > MaxDuration || o.Timeout < 0 {
		errs = append(errs, fmt.Errorf("duration must be in 0..%s and timeout >= 0", MaxDuration))
	}
	if o.Duration == 0 {
		o.Duration = DefaultDuration
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	if o.EHLO == "" {
		o.EHLO = DefaultEHLO
	}
	o.Conns = min(o.Conns, max(o.Messages, 1))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("loadgen: %w", err)
	}
	return nil
}

// Done reports how many messages have finished (sent or failed); safe to
// call while Run is in progress, e.g. for a progress bar.
func (b *Bench) Done() int64 { return b.done.Load() }

// Sent reports how many messages the server accepted so far.
func (b *Bench) Sent() int64 { return b.sent.Load() }

// Run submits the messages and returns the summary. It returns an error only
// when nothing could be sent at all; partial failures are in the Result.
func (b *Bench) Run(ctx context.Context) (Result, error) {
	runCtx, cancel := context.WithTimeout(ctx, b.opts.Duration)
	defer cancel()
	// Hard stop: a grace after the end, close whatever is still busy.
	finished := make(chan struct{})
	go b.hardStop(runCtx, finished)

	start := time.Now()
	workers := make([]*worker, b.opts.Conns)
	var wg sync.WaitGroup
	for i := range workers {
		workers[i] = newWorker(b, i)
		wg.Add(1)
		go func(w *worker) {
			defer wg.Done()
			w.loop(runCtx)
		}(workers[i])
	}
	wg.Wait()
	end := time.Now()
	close(finished)
	res := b.summarise(workers, start, end)
	res.StoppedByDuration = errors.Is(runCtx.Err(), context.DeadlineExceeded) && ctx.Err() == nil &&
		res.Sent+res.Failed < int64(b.opts.Messages)
	if res.Sent == 0 {
		return res, fmt.Errorf("loadgen: no message was accepted (first error: %s)", res.FirstError)
	}
	return res, nil
}

// hardStop closes every connection a grace period after ctx ends, unless
// the run finishes first.
func (b *Bench) hardStop(ctx context.Context, finished <-chan struct{}) {
	select {
	case <-finished:
		return
	case <-ctx.Done():
	}
	t := time.NewTimer(min(b.opts.Timeout, maxGrace))
	defer t.Stop()
	select {
	case <-finished:
	case <-t.C:
		b.conns.closeAll()
	}
}

func (b *Bench) summarise(workers []*worker, start, end time.Time) Result {
	var h histogram
	res := Result{
		Server: b.opts.Server, TLS: b.opts.TLS, Messages: b.opts.Messages, Conns: b.opts.Conns,
		Size: b.opts.Size, FailedByCode: map[string]int64{},
		StartUnixNs: start.UnixNano(), EndUnixNs: end.UnixNano(),
	}
	var firstAt time.Time
	for _, w := range workers {
		h.merge(&w.hist)
		res.Connects += w.connects
		for code, n := range w.failed {
			res.FailedByCode[code] += n
			res.Failed += n
		}
		if w.firstErr != nil && (firstAt.IsZero() || w.firstAt.Before(firstAt)) {
			res.FirstError, firstAt = w.firstErr.Error(), w.firstAt
		}
	}
	res.Sent = int64(h.n)
	res.Unsent = max(int64(b.opts.Messages)-res.Sent-res.Failed, 0)
	res.Bytes = res.Sent * int64(b.opts.Size)
	elapsed := end.Sub(start)
	res.ElapsedS = elapsed.Seconds()
	if elapsed > 0 {
		res.MsgsPerS = float64(res.Sent) / elapsed.Seconds()
		res.MBPerS = float64(res.Bytes) / 1e6 / elapsed.Seconds()
	}
	res.P50Ms, res.P90Ms = ms(h.quantile(0.50)), ms(h.quantile(0.90))
	res.P99Ms, res.MaxMs, res.MeanMs = ms(h.quantile(0.99)), ms(h.max), ms(h.mean())
	return res
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
