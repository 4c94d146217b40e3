package submit

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"
)

// Generous: the suite must pass with -race on a loaded 2-core machine.
const testTimeout = 60 * time.Second

// Test users (bcrypt at MinCost to keep -race runs quick).
const (
	appUser, appPass   = "app", "app-secret"
	anyUser, anyPass   = "dev", "dev-secret"
	slowUser, slowPass = "limited", "limited-secret"
)

// Listener order of the test config: 587-style, 465-style, 2525-style.
const (
	lnStartTLS = iota
	lnImplicit
	lnStartTLS2
)

func hash(t testing.TB, pass string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

// settingsOf is what cmd/jetrelay builds from a configuration.
func settingsOf(cfg *config.Config) Settings {
	s := Settings{Hostname: cfg.Hostname, DataDir: cfg.DataDir, Submission: cfg.Submission,
		VerifyDomains: cfg.Bounces.VerifyDomains, DNS: cfg.Delivery.DNS}
	for _, r := range cfg.Delivery.Routes {
		s.Routed = append(s.Routed, r.Domains...)
	}
	return s
}

// reload applies cfg's live settings as a SIGHUP does.
func reload(t testing.TB, s *Server, cfg *config.Config) {
	t.Helper()
	apply, err := s.Prepare(settingsOf(cfg))
	if err != nil {
		t.Fatal(err)
	}
	apply()
}

// testConfig is the built-in default on loopback random ports with three
// users; mods adjust it.
func testConfig(t testing.TB, mods ...func(*config.Config)) *config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.Dev = false
	cfg.Hostname = "relay.test"
	cfg.DataDir = t.TempDir()
	cfg.Submission.Listeners = []config.Listener{
		{Addr: "127.0.0.1:0", TLS: "starttls"}, {Addr: "127.0.0.1:0", TLS: "implicit"},
		{Addr: "127.0.0.1:0", TLS: "starttls"},
	}
	cfg.Submission.AuthFailures.Delay = config.Duration(time.Millisecond)
	rate, _ := config.ParseRate("2/h")
	cfg.Submission.Users = []config.User{
		{Name: appUser, PasswordHash: hash(t, appPass), AllowedFrom: []string{"Example.com", "alerts@example.org"}},
		{Name: anyUser, PasswordHash: hash(t, anyPass), AllowedFrom: []string{"*"}},
		{Name: slowUser, PasswordHash: hash(t, slowPass), AllowedFrom: []string{"example.com"}, Rate: rate},
	}
	for _, m := range mods {
		if m != nil {
			m(cfg)
		}
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("test config: %v", err)
	}
	return cfg
}

// harness is a started submission server on a real embedded JetStream.
type harness struct {
	t      testing.TB
	cfg    *config.Config
	q      *queue.Queue
	qDir   string
	srv    *Server
	client *tls.Config
	logs   *logBuffer
}

type harnessOpts struct {
	signer     Signer
	suppressor Suppressor
	observer   Observer
	conns      Gauge
	queue      *queue.Queue // share another harness's JetStream (default: a new one)
	// proxyTimeout shortens the PROXY header limit (default 5 s).
	proxyTimeout time.Duration
	// rateClock is the rate limiter's clock (default time.Now).
	rateClock *testClock
	// nodeJS is this node's own connection for the brake and rate buckets
	// (default: the queue's).
	nodeJS jetstream.JetStream
}

func start(t testing.TB, cfg *config.Config, ho ...harnessOpts) *harness {
	t.Helper()
	var o harnessOpts
	if len(ho) > 0 {
		o = ho[0]
	}
	h := &harness{t: t, cfg: cfg, qDir: t.TempDir(), logs: &logBuffer{}}
	h.q = o.queue
	if h.q == nil {
		h.q = queuetest.RunJetStream(t, queuetest.Options{DataDir: h.qDir})
	}
	if o.nodeJS == nil {
		o.nodeJS = h.q.JetStream()
	}
	brake := openBrakeOn(t, o.nodeJS)
	log := zerolog.New(io.MultiWriter(zerolog.NewTestWriter(t), h.logs))
	ro := RateOptions{JetStream: o.nodeJS, Logger: log}
	if o.rateClock != nil {
		ro.Now = o.rateClock.now
	}
	rates := openTestRates(t, ro)
	var err error // no Options.TLS: the server loads (generates) it from cfg, as in production
	h.srv, err = New(Options{Settings: settingsOf(cfg), Queue: h.q, Signer: o.signer, Suppressor: o.suppressor,
		Events: events.NewEmitter(log, nil), Logger: log, Observer: o.observer, Conns: o.conns, Brake: brake,
		Rates: rates})
	if err != nil {
		t.Fatal(err)
	}
	h.srv.proxyTimeout = o.proxyTimeout
	if err := h.srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		if err := h.srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	h.client = clientTLS(t, cfg)
	return h
}

// clientTLS trusts exactly the generated certificate and verifies it.
func clientTLS(t testing.TB, cfg *config.Config) *tls.Config {
	t.Helper()
	pemBytes, err := os.ReadFile(filepath.Join(cfg.DataDir, "tls", "cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		t.Fatal("bad generated certificate")
	}
	return &tls.Config{RootCAs: pool, ServerName: "localhost"}
}

func (h *harness) addr(i int) string { return h.srv.Addrs()[i].String() }

// stored returns how many messages the queue stream holds.
func (h *harness) stored() uint64 {
	h.t.Helper()
	return queuetest.StreamMsgs(h.t, h.q)
}

// lease reads n entries from the delivery consumer (keyed queue id/domain).
func (h *harness) lease(n int) map[string]*queue.Entry {
	h.t.Helper()
	return leaseFrom(h.t, h.q, n)
}

func leaseFrom(t testing.TB, q *queue.Queue, n int) map[string]*queue.Entry {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	es, err := q.Lease(ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	defer es.Stop()
	stop := time.AfterFunc(testTimeout, es.Stop)
	defer stop.Stop()
	out := map[string]*queue.Entry{}
	for len(out) < n {
		e, err := es.Next()
		if err != nil {
			t.Fatalf("lease %d of %d entries: %v", len(out)+1, n, err)
		}
		out[e.Env.ID+"/"+e.Env.Domain] = e
	}
	return out
}

func body(t testing.TB, e *queue.Entry) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	b, err := e.Body(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// logBuffer collects log lines for event assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// events returns the logged events of one kind.
func (l *logBuffer) events(kind string) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(l.buf.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["event"] == kind {
			out = append(out, m)
		}
	}
	return out
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// smtpReply is one parsed SMTP reply.
type smtpReply struct {
	Code  int
	Enh   string
	Text  string
	Lines []string
}

func (r smtpReply) String() string { return strconv.Itoa(r.Code) + " " + r.Enh + " " + r.Text }

// rawClient speaks SMTP byte for byte, for what go-smtp's client refuses to send.
type rawClient struct {
	t    testing.TB
	conn net.Conn
	r    *textproto.Reader
}

// dialRaw connects and reads the 220 greeting (implicit: TLS first).
func (h *harness) dialRaw(listener int) *rawClient {
	h.t.Helper()
	c, g := h.dialGreeting(listener)
	if g.Code != 220 {
		h.t.Fatalf("greeting: %v", g)
	}
	return c
}

// dialGreeting connects and returns the first reply, whatever it is.
func (h *harness) dialGreeting(listener int) (*rawClient, smtpReply) {
	h.t.Helper()
	var conn net.Conn
	var err error
	d := &net.Dialer{Timeout: testTimeout}
	if h.cfg.Submission.Listeners[listener].TLS == "implicit" {
		conn, err = tls.DialWithDialer(d, "tcp", h.addr(listener), h.client)
	} else {
		conn, err = d.Dial("tcp", h.addr(listener))
	}
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { conn.Close() })
	c := &rawClient{t: h.t, conn: conn, r: textproto.NewReader(bufio.NewReader(conn))}
	return c, c.read()
}

func (c *rawClient) send(s string) {
	c.t.Helper()
	_ = c.conn.SetWriteDeadline(time.Now().Add(testTimeout))
	if _, err := io.WriteString(c.conn, s); err != nil {
		c.t.Fatalf("write %q: %v", s, err)
	}
}

// readErr reads one reply, or returns the read error.
func (c *rawClient) readErr() (smtpReply, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(testTimeout))
	var r smtpReply
	for {
		line, err := c.r.ReadLine()
		if err != nil {
			return r, err
		}
		if len(line) < 4 {
			return r, errors.New("short reply line " + strconv.Quote(line))
		}
		r.Code, _ = strconv.Atoi(line[:3])
		r.Lines = append(r.Lines, line[4:])
		if line[3] == ' ' {
			break
		}
	}
	last := r.Lines[len(r.Lines)-1]
	if parts := strings.SplitN(last, " ", 2); len(parts) == 2 && strings.Count(parts[0], ".") == 2 &&
		parts[0][0] >= '2' && parts[0][0] <= '5' {
		r.Enh, r.Text = parts[0], parts[1]
	} else {
		r.Text = last
	}
	return r, nil
}

func (c *rawClient) read() smtpReply {
	c.t.Helper()
	r, err := c.readErr()
	if err != nil {
		c.t.Fatalf("read reply: %v", err)
	}
	return r
}

// cmd sends one command line and reads the reply.
func (c *rawClient) cmd(line string) smtpReply {
	c.t.Helper()
	c.send(line + "\r\n")
	return c.read()
}

// expect sends a command and checks the reply's code and enhanced code.
func (c *rawClient) expect(line string, code int, enh string) smtpReply {
	c.t.Helper()
	r := c.cmd(line)
	if r.Code != code || (enh != "" && r.Enh != enh) {
		c.t.Fatalf("%q: got %v, want %d %s", line, r, code, enh)
	}
	return r
}

// starttls upgrades a plaintext connection.
func (c *rawClient) starttls(conf *tls.Config) {
	c.t.Helper()
	c.expect("STARTTLS", 220, "")
	tc := tls.Client(c.conn, conf)
	if err := tc.Handshake(); err != nil {
		c.t.Fatalf("TLS handshake: %v", err)
	}
	c.conn = tc
	c.r = textproto.NewReader(bufio.NewReader(tc))
}

// login says EHLO (after STARTTLS on a STARTTLS listener) and AUTH PLAIN.
func (h *harness) login(listener int, user, pass string) *rawClient {
	h.t.Helper()
	c := h.dialRaw(listener)
	if h.cfg.Submission.Listeners[listener].TLS == "starttls" {
		c.expect("EHLO client.test", 250, "")
		c.starttls(h.client)
	}
	c.expect("EHLO client.test", 250, "")
	c.expect("AUTH PLAIN "+plain(user, pass), 235, "2.0.0")
	return c
}

func plain(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
}

// message is a small valid message from From: addr.
func message(from, extra string) string {
	return "From: Sender <" + from + ">\r\nTo: rcpt@one.test\r\nSubject: test\r\n" + extra + "\r\nHello.\r\n"
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func testLogger(t testing.TB) zerolog.Logger { return zerolog.New(zerolog.NewTestWriter(t)) }

func testEmitter(t testing.TB) *events.Emitter { return events.NewEmitter(testLogger(t), nil) }

// nopQueue refuses everything; for tests that never get to DATA.
type nopQueue struct{}

func (nopQueue) Enqueue(context.Context, *queue.Message) error { return errors.New("nopQueue") }
