package bounce

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"net/textproto"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/relaytest"
	"github.com/rs/zerolog"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// t0 is the injected clock's time in every test.
var t0 = time.Date(2026, 3, 14, 9, 26, 53, 0, time.UTC)

// fixture is a Bouncer on a real embedded JetStream with a fixed clock.
type fixture struct {
	b   *Bouncer
	q   *queue.Queue
	cfg *config.Config
	rec *relaytest.Events
	now time.Time
	ids int
}

// settingsOf is what cmd/jetrelay builds from a configuration.
func settingsOf(cfg *config.Config) Settings {
	return Settings{Bounces: cfg.Bounces, Hostname: cfg.Hostname, From: cfg.BouncesFrom(), DataDir: cfg.DataDir,
		MaxAge: cfg.Delivery.Retry.MaxAge.D(), MaxMessageBytes: int64(cfg.Submission.MaxMessageBytes)}
}

func testConfig(t *testing.T) *config.Config {
	t.Helper()
	c := config.Default()
	c.Dev = false
	c.Hostname = "relay.test"
	c.DataDir = t.TempDir()
	c.Bounces.From = "MAILER-DAEMON@relay.test"
	c.Delivery.Retry.MaxAge = config.Duration(48 * time.Hour)
	return c
}

func newFixture(t *testing.T, cfg *config.Config) *fixture {
	t.Helper()
	if cfg == nil {
		cfg = testConfig(t)
	}
	f := &fixture{q: queuetest.RunJetStream(t), cfg: cfg, rec: &relaytest.Events{}, now: t0}
	log := zerolog.New(zerolog.NewTestWriter(t))
	b, err := New(context.Background(), Options{
		Settings: settingsOf(cfg), Queue: f.q, Events: events.NewEmitter(log, f.rec), Logger: log,
		Now: func() time.Time { return f.now },
		NewID: func() string {
			f.ids++
			return "01DSN000000000000000" + string(rune('A'+f.ids/10)) + string(rune('0'+f.ids%10))
		},
	})
	if err != nil {
		t.Fatalf("bounce.New: %v", err)
	}
	f.b = b
	return f
}

// queued takes (and acknowledges) every entry in the queue: the DSNs
// Bouncer queued since the last call. Bodies are inline, so still readable.
func (f *fixture) queued(t *testing.T) []*queue.Entry {
	t.Helper()
	n := int(queuetest.StreamMsgs(t, f.q))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if n == 0 {
		return nil
	}
	es, err := f.q.Lease(ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	defer es.Stop()
	var out []*queue.Entry
	for len(out) < n {
		e, err := es.Next()
		if err != nil {
			t.Fatalf("lease: %v", err)
		}
		if _, err := e.Body(ctx); err != nil {
			t.Fatalf("body: %v", err)
		}
		if err := e.Done(ctx); err != nil { // so the next call sees only new entries
			t.Fatalf("ack: %v", err)
		}
		out = append(out, e)
	}
	return out
}

// dsn is a DSN parsed back into its parts.
type dsn struct {
	header   mail.Header
	human    string
	perMsg   textproto.MIMEHeader
	rcpts    []textproto.MIMEHeader
	origType string
	orig     []byte
}

// parseDSN reads a DSN with mime/multipart and net/textproto, failing the
// test on any structural problem (RFC 6522 §3: three parts, in order).
func parseDSN(t *testing.T, raw []byte) dsn {
	t.Helper()
	m, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("DSN is not a message: %v", err)
	}
	ct, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil || ct != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("Content-Type = %q, want multipart/report; report-type=delivery-status", m.Header.Get("Content-Type"))
	}
	d := dsn{header: m.Header}
	mr := multipart.NewReader(m.Body, params["boundary"])
	var parts []*multipart.Part
	var bodies [][]byte
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("multipart: %v", err)
		}
		b, err := io.ReadAll(p)
		if err != nil {
			t.Fatalf("read part: %v", err)
		}
		parts, bodies = append(parts, p), append(bodies, b)
	}
	if len(parts) != 3 {
		t.Fatalf("DSN has %d parts, want 3", len(parts))
	}
	if ct := parts[0].Header.Get("Content-Type"); !bytes.HasPrefix([]byte(ct), []byte("text/plain")) {
		t.Errorf("part 1 Content-Type = %q, want text/plain", ct)
	}
	if ct := parts[1].Header.Get("Content-Type"); ct != "message/delivery-status" {
		t.Fatalf("part 2 Content-Type = %q, want message/delivery-status", ct)
	}
	d.human = string(bodies[0])
	tp := textproto.NewReader(bufioReader(bodies[1]))
	if d.perMsg, err = tp.ReadMIMEHeader(); err != nil {
		t.Fatalf("per-message fields: %v", err)
	}
	for {
		h, err := tp.ReadMIMEHeader()
		if len(h) > 0 {
			d.rcpts = append(d.rcpts, h)
		}
		if err != nil {
			break
		}
	}
	d.origType, d.orig = parts[2].Header.Get("Content-Type"), bodies[2]
	return d
}

// golden compares got with testdata/name.golden (rewritten with -update).
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (go test -update to accept):\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

func bufioReader(b []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(b)) }

// verpOf is b's VERP address for rcpt of env; a storage error fails the test.
func verpOf(t testing.TB, b *Bouncer, env *queue.Envelope, rcpt string) string {
	t.Helper()
	addr, err := b.VERPAddress(context.Background(), env, rcpt)
	if err != nil {
		t.Fatal(err)
	}
	return addr
}
