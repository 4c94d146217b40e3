package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/devtools/loadgen"
	"golang.org/x/term"
)

const benchAbout = `Load-tests an SMTP submission service (jetrelay or any other): -c connections,
each reused for many messages (MAIL, RCPT, DATA back to back), submit -n
realistic messages of --size bytes. A progress bar is drawn on a terminal;
then a summary: sent, failed by reply code, msg/s, MB/s and the accept latency
(MAIL FROM .. reply to the end of DATA) p50/p90/p99/max. --json prints one
JSON object instead. With --user, AUTH PLAIN is used and the password is read
from --password-env or prompted for. Only loopback servers unless --allow-remote.`

// progressInterval is how often the progress bar is redrawn.
const progressInterval = 200 * time.Millisecond

// benchFlags are the parsed flags of `jetrelay bench`.
type benchFlags struct {
	opts        loadgen.Options
	tls, size   string
	passwordEnv string
	json, quiet bool
}

func parseBenchFlags(args []string, sio stdio) (*benchFlags, int, bool) {
	f := &benchFlags{}
	fs := newFlags("bench", "bench [flags]", benchAbout, sio)
	fs.StringVar(&f.opts.Server, "server", "127.0.0.1:587", "submission server `host:port`")
	fs.StringVar(&f.tls, "tls", "starttls", "TLS: starttls | implicit | none")
	fs.BoolVar(&f.opts.Insecure, "insecure", false, "do not verify the server certificate")
	fs.StringVar(&f.opts.User, "user", "", "AUTH PLAIN user (none: no AUTH)")
	fs.StringVar(&f.passwordEnv, "password-env", "", "environment `VAR` holding the password (default: prompt)")
	fs.IntVar(&f.opts.Messages, "n", 1000, "messages to submit")
	fs.IntVar(&f.opts.Conns, "c", 16, "connections, each reused for many messages")
	fs.StringVar(&f.size, "size", "4KiB", "message size, headers included (bytes or 4KiB, 100KiB)")
	fs.StringVar(&f.opts.Rcpt, "rcpt", "user{n}@example.test", "recipient; {n} is the message number")
	fs.StringVar(&f.opts.From, "from", "bench@example.test", "envelope and header sender")
	fs.DurationVar(&f.opts.Duration, "duration", loadgen.DefaultDuration, "stop after this long even if -n is not reached (max 24h)")
	fs.DurationVar(&f.opts.Timeout, "timeout", loadgen.DefaultTimeout, "per SMTP command and per end-of-DATA reply")
	fs.StringVar(&f.opts.EHLO, "ehlo", loadgen.DefaultEHLO, "EHLO name")
	fs.BoolVar(&f.opts.AllowRemote, "allow-remote", false, "allow a server that is not on a loopback address")
	fs.BoolVar(&f.json, "json", false, "print one JSON object instead of the summary")
	fs.BoolVar(&f.quiet, "quiet", false, "no progress bar")
	if rc, ok := parseFlags(fs, args); !ok {
		return nil, rc, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(sio.err, "jetrelay bench: unexpected argument %q\n", fs.Arg(0))
		return nil, 2, false
	}
	size, err := config.ParseSize(f.size)
	if err != nil {
		fmt.Fprintf(sio.err, "jetrelay bench: --size: %v\n", err)
		return nil, 2, false
	}
	f.opts.Size = int(size)
	f.opts.TLS = loadgen.TLSMode(f.tls)
	return f, 0, true
}

func runBench(args []string, sio stdio) int {
	f, rc, ok := parseBenchFlags(args, sio)
	if !ok {
		return rc
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if f.opts.User != "" {
		pass, err := benchPassword(f.passwordEnv, sio)
		if err != nil {
			fmt.Fprintf(sio.err, "jetrelay bench: %v\n", err)
			return 2
		}
		f.opts.Password = pass
	}
	b, err := loadgen.New(ctx, f.opts)
	if err != nil {
		fmt.Fprintf(sio.err, "jetrelay bench: %v\n", err)
		return 2
	}
	stopBar := func() {}
	if !f.json && !f.quiet && isTerminal(sio.err) {
		stopBar = startProgress(b, f.opts.Messages, sio.err)
	}
	res, runErr := b.Run(ctx)
	stopBar()
	if f.json {
		enc := json.NewEncoder(sio.out)
		if err := enc.Encode(res); err != nil {
			fmt.Fprintf(sio.err, "jetrelay bench: %v\n", err)
			return 1
		}
	} else {
		printSummary(sio.out, &res)
	}
	if runErr != nil {
		fmt.Fprintf(sio.err, "jetrelay bench: %v\n", runErr)
		return 1
	}
	return 0
}

// benchPassword reads the password from the environment variable, else
// prompts without echo on a terminal, else reads one line from stdin.
func benchPassword(env string, sio stdio) (string, error) {
	if env != "" {
		p, ok := os.LookupEnv(env)
		if !ok || p == "" {
			return "", fmt.Errorf("--password-env: %s is not set", env)
		}
		return p, nil
	}
	if f, ok := sio.in.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(sio.err, "Password: ")
		p, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(sio.err)
		if err != nil {
			return "", fmt.Errorf("read password: %w", err)
		}
		return string(p), nil
	}
	line, err := bufio.NewReader(io.LimitReader(sio.in, 4096)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read password: %w", err)
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", errors.New("no password (use --password-env VAR or type it at the prompt)")
	}
	return line, nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// startProgress redraws a one-line bar on w until the returned stop is called.
func startProgress(b *loadgen.Bench, total int, w io.Writer) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(finished)
		t := time.NewTicker(progressInterval)
		defer t.Stop()
		for {
			select {
			case <-done:
				fmt.Fprint(w, "\r\033[K")
				return
			case <-t.C:
				drawBar(w, b.Done(), b.Sent(), total, time.Since(start))
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}

func drawBar(w io.Writer, done, sent int64, total int, elapsed time.Duration) {
	const width = 30
	frac := float64(done) / float64(max(total, 1))
	filled := min(int(frac*width), width)
	rate := float64(sent) / max(elapsed.Seconds(), 1e-9)
	fmt.Fprintf(w, "\r[%s%s] %d/%d %5.1f%% %.0f msg/s  failed %d\033[K",
		strings.Repeat("#", filled), strings.Repeat(".", width-filled), done, total, frac*100, rate, done-sent)
}

func printSummary(w io.Writer, r *loadgen.Result) {
	fmt.Fprintf(w, "jetrelay bench: %s (%s), %d messages of %d bytes over %d connections\n",
		r.Server, r.TLS, r.Messages, r.Size, r.Conns)
	fmt.Fprintf(w, "sent      %d in %.2f s: %.1f msg/s, %.2f MB/s (%d connections opened)\n",
		r.Sent, r.ElapsedS, r.MsgsPerS, r.MBPerS, r.Connects)
	fmt.Fprintf(w, "failed    %d%s\n", r.Failed, formatCodes(r.FailedByCode))
	if r.Unsent > 0 {
		why := ""
		if r.StoppedByDuration {
			why = " (stopped by --duration)"
		}
		fmt.Fprintf(w, "unsent    %d%s\n", r.Unsent, why)
	}
	fmt.Fprintf(w, "latency   p50 %.2f ms  p90 %.2f ms  p99 %.2f ms  max %.2f ms  (MAIL FROM .. end of DATA)\n",
		r.P50Ms, r.P90Ms, r.P99Ms, r.MaxMs)
	if r.FirstError != "" {
		_ = tprintf(w, "first error: %s\n", r.FirstError)
	}
}

// formatCodes renders {"451": 3, "net": 1} as " (451: 3, net: 1)".
func formatCodes(m map[string]int64) string {
	if len(m) == 0 {
		return ""
	}
	codes := make([]string, 0, len(m))
	for c := range m {
		codes = append(codes, c)
	}
	sort.Strings(codes)
	parts := make([]string, len(codes))
	for i, c := range codes {
		parts[i] = fmt.Sprintf("%s: %d", c, m[c])
	}
	return " (" + strings.Join(parts, ", ") + ")"
}
