package deliver_test

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/deliver"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/outcome"
	"github.com/jetrelay/jetrelay/relay/relaytest"
	"github.com/jetrelay/jetrelay/relay/shaping"
	"github.com/jetrelay/jetrelay/relay/smtpclient"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// wait is the generous deadline for anything a test waits for.
const wait = 60 * time.Second

// harness is one test's world: a real embedded JetStream queue, a fake DNS
// zone, fake MX servers sharing one port on distinct 127.0.0.x addresses,
// and recorders for the delivery log and the reporter.
type harness struct {
	t       testing.TB
	q       *queue.Queue
	dataDir string
	zone    *relaytest.Zone
	dns     string
	port    int
	rep     *reporter
	log     *relaytest.Events // delivery events and destination_*, domain_* log lines
	quiet   bool              // benchmarks: no log lines in the test output
	// Optional engine options for the next start.
	sender func(context.Context, *queue.Envelope, string) (string, error)
	conns  smtpclient.Gauge
	dialer smtpclient.Dialer
	// wrapRes, when set, wraps the engine's resolver (fault injection).
	wrapRes func(smtpclient.Resolver) smtpclient.Resolver
	// shaper and editSet, when set, go into the next engine started.
	shaper  *shaping.Shaper
	editSet func(*deliver.Settings)
	eng     *deliver.Engine // the last engine started
	// stsKV, when set, is the MTA-STS cache of the next engine started.
	stsKV jetstream.KeyValue
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	h := &harness{t: t, dataDir: t.TempDir(), zone: relaytest.NewZone(), rep: &reporter{}, log: &relaytest.Events{}}
	h.q = queuetest.RunJetStream(t, queuetest.Options{DataDir: h.dataDir})
	h.dns = relaytest.FakeDNS(t, h.zone)
	return h
}

// mx starts a fake MX on the harness port (picked by the first one).
func (h *harness) mx(opts ...relaytest.Option) *relaytest.MX {
	h.t.Helper()
	if h.port != 0 {
		opts = append(opts, relaytest.Port(h.port))
	}
	m := relaytest.FakeMX(h.t, opts...)
	h.port = m.Port
	return m
}

// closedIP is an address where connections to the harness port are refused.
func (h *harness) closedIP() string {
	h.t.Helper()
	if h.port == 0 {
		h.mx() // fix the port
	}
	return relaytest.ClosedAddr(h.t, h.port)
}

// domain publishes "dom MX 10 mx.dom" with mx.dom → ip.
func (h *harness) domain(dom string, ips ...string) {
	for i, ip := range ips {
		host := fmt.Sprintf("mx%d.%s", i+1, dom)
		h.zone.AddMX(dom, uint16(10*(i+1)), host)
		h.zone.AddA(host, ip)
	}
}

func (h *harness) config() *config.Config {
	h.t.Helper()
	if h.port == 0 {
		h.mx()
	}
	return relaytest.Config(h.t, h.dns, h.port)
}

// settingsOf is what cmd/jetrelay builds from a configuration.
func settingsOf(cfg *config.Config) deliver.Settings {
	return deliver.Settings{Delivery: cfg.Delivery, Hostname: cfg.Hostname, VERP: cfg.Bounces.VERPDomain != "",
		DelayNoticeAfter: cfg.Bounces.DelayNoticeAfter.D()}
}

// start runs an engine until the test ends (or the returned stop is called).
func (h *harness) start(cfg *config.Config) (stop func()) {
	h.t.Helper()
	return h.startOn(h.q, cfg)
}

// startOn is start with the engine on queue q (another connection to the
// same JetStream: a second node).
func (h *harness) startOn(q *queue.Queue, cfg *config.Config) (stop func()) {
	h.t.Helper()
	res, err := smtpclient.NewResolver(smtpclient.DNSOptions{
		Servers: cfg.Delivery.DNS.Servers, Timeout: time.Second, LoopbackOnly: true,
	})
	if err != nil {
		h.t.Fatal(err)
	}
	if h.wrapRes != nil {
		res = h.wrapRes(res)
	}
	var w io.Writer = zerolog.MultiLevelWriter(zerolog.NewTestWriter(h.t), h.log)
	if h.quiet {
		w = io.Discard
	}
	logger := zerolog.New(w).With().Timestamp().Logger()
	var dialer smtpclient.Dialer = &relaytest.LoopbackDialer{}
	if h.dialer != nil {
		dialer = h.dialer
	}
	set := settingsOf(cfg)
	if h.editSet != nil {
		h.editSet(&set)
	}
	eng, err := deliver.New(deliver.Options{Settings: set, Queue: q, Events: events.NewEmitter(logger, nil),
		Logger: logger, Reporter: h.rep, Resolver: res, Dialer: dialer, Sender: h.sender, Conns: h.conns,
		Shaper: h.shaper, MTASTS: h.stsKV})
	if err != nil {
		h.t.Fatal(err)
	}
	h.eng = eng
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- eng.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					h.t.Errorf("engine: %v", err)
				}
			case <-time.After(wait):
				h.t.Errorf("engine did not stop")
			}
		})
	}
	h.t.Cleanup(stop)
	return stop
}

// send enqueues one message to rcpts (all of one domain).
func (h *harness) send(rcpts []string, edit ...func(*queue.Envelope)) string {
	h.t.Helper()
	return h.sendBody(rcpts,
		[]byte("From: a@sender.test\r\nSubject: test\r\nMessage-ID: <m@sender.test>\r\n\r\nhello\r\n"), edit...)
}

func (h *harness) sendBody(rcpts []string, body []byte, edit ...func(*queue.Envelope)) string {
	h.t.Helper()
	_, dom, _ := strings.Cut(rcpts[0], "@")
	env := &queue.Envelope{From: "a@sender.test", MsgID: "<m@sender.test>", Domain: dom, Arrival: time.Now()}
	for _, r := range rcpts {
		env.Rcpts = append(env.Rcpts, queue.Recipient{Addr: r})
	}
	for _, f := range edit {
		f(env)
	}
	m := &queue.Message{Body: body, Entries: []*queue.Envelope{env}}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := h.q.Enqueue(ctx, m); err != nil {
		h.t.Fatalf("enqueue: %v", err)
	}
	return m.ID
}

// queued counts stored entries under a subject prefix (queue.SubjReady, SubjScheduled).
func (h *harness) queued(prefix string) int {
	h.t.Helper()
	n := 0
	for _, c := range queuetest.StreamInfo(h.t, h.q, prefix+".>").State.Subjects {
		n += int(c)
	}
	return n
}

// reporter records what the engine reports.
type reporter struct {
	mu                       sync.Mutex
	failed, relayed, delayed []outcome.Result
}

func (r *reporter) Failed(_ context.Context, _ *queue.Envelope, _ []byte, res []outcome.Result) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failed = append(r.failed, res...)
	return nil
}

func (r *reporter) Relayed(_ context.Context, _ *queue.Envelope, _ []byte, res []outcome.Result) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.relayed = append(r.relayed, res...)
	return nil
}

func (r *reporter) Delayed(_ context.Context, _ *queue.Envelope, _ []byte, res []outcome.Result) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.delayed = append(r.delayed, res...)
	return nil
}

// failures returns the failed results for rcpt.
func (r *reporter) failures(rcpt string) []outcome.Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []outcome.Result
	for _, f := range r.failed {
		if f.Rcpt.Addr == rcpt {
			out = append(out, f)
		}
	}
	return out
}

// deliveries returns the delivery events for rcpt (all statuses when
// status is "").
func (h *harness) deliveries(rcpt, status string) []events.Event {
	return h.log.Find(events.Delivery, relaytest.Rcpt(rcpt, status))
}

// stored reports whether any entry of queue id is still in the queue
// (ready, in flight or scheduled).
func (h *harness) stored(id string) bool {
	h.t.Helper()
	info := queuetest.StreamInfo(h.t, h.q, "jr.*."+id+".>")
	for subj, n := range info.State.Subjects {
		if n > 0 && !strings.HasPrefix(subj, queue.SubjBody+".") {
			return true
		}
	}
	return false
}

func itoa(n int) string { return strconv.Itoa(n) }
