package admin_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/jetrelay/jetrelay/relay/admin"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/relaytest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

func startAdmin(t *testing.T, o admin.Options) (*admin.Server, string) {
	t.Helper()
	o.Listen = "127.0.0.1:0"
	o.Logger = zerolog.New(zerolog.NewTestWriter(t))
	if o.SampleEvery == 0 {
		o.SampleEvery = 20 * time.Millisecond
	}
	s, err := admin.New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	return s, "http://" + s.Addr().String()
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metric returns the value of one series line (name{labels} as exposed,
// labels sorted by name), or -1 when absent.
func metric(t *testing.T, base, series string) float64 {
	t.Helper()
	_, body := get(t, base+"/metrics")
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", series, err)
			}
			return f
		}
	}
	return -1
}

func TestMetricsMoveWithEventsAndQueue(t *testing.T) {
	t.Parallel()
	q := queuetest.RunJetStream(t)
	m := admin.NewMetrics()
	_, base := startAdmin(t, admin.Options{Metrics: m, Queue: q})
	em := events.NewEmitter(zerolog.Nop(), events.Tee(m))

	named := []string{
		"jetrelay_messages_accepted_total", `jetrelay_connections_active{direction="inbound"}`,
		`jetrelay_queue_depth{state="ready"}`, `jetrelay_queue_oldest_age_seconds{state="deferred"}`,
		"jetrelay_events_dropped_total", "jetrelay_delivery_latency_seconds_count",
		"jetrelay_dkim_sign_seconds_count", "jetrelay_jetstream_publish_seconds_count",
	}
	for _, s := range named {
		if metric(t, base, s) != 0 {
			t.Errorf("%s not exposed as 0 at start", s)
		}
	}

	now := time.Now()
	em.Emit(&events.Event{Event: events.Accepted, QueueID: "x"})
	em.Emit(&events.Event{Event: events.Rejected, SMTPCode: 535, SMTPEnh: "5.7.8", Reason: "AUTH: bad"})
	em.Emit(&events.Event{Time: now, Event: events.Delivery, Status: events.StatusDelivered, SMTPCode: 250,
		SMTPEnh: "2.0.0", TLS: "TLS1.3", Arrival: now.Add(-3 * time.Second)})
	em.Emit(&events.Event{Event: events.Delivery, Status: events.StatusDeferred, SMTPCode: 451, SMTPEnh: "4.7.1"})
	em.Emit(&events.Event{Event: events.Delivery, Status: events.StatusDeferred, Reason: "dns: SERVFAIL"})
	em.Emit(&events.Event{Event: events.Delivery, Status: events.StatusFailed, SMTPCode: 550})
	m.Connections(admin.Inbound).Inc()
	m.ObserveDKIMSign(time.Millisecond)
	m.ObservePublish(2 * time.Millisecond)
	m.EventDropped()

	want := map[string]float64{
		"jetrelay_messages_accepted_total":                        1,
		`jetrelay_messages_rejected_total{reason="5.7.8"}`:        1,
		`jetrelay_deliveries_total{class="2",status="delivered"}`: 1,
		`jetrelay_deliveries_total{class="4",status="deferred"}`:  2,
		`jetrelay_deliveries_total{class="5",status="failed"}`:    1,
		`jetrelay_tls_deliveries_total{tls="TLS1.3"}`:             1,
		"jetrelay_delivery_latency_seconds_count":                 1,
		"jetrelay_delivery_latency_seconds_sum":                   3,
		`jetrelay_delivery_latency_seconds_bucket{le="5"}`:        1,
		`jetrelay_connections_active{direction="inbound"}`:        1,
		`jetrelay_connections_active{direction="outbound"}`:       0,
		"jetrelay_dkim_sign_seconds_count":                        1,
		"jetrelay_jetstream_publish_seconds_count":                1,
		"jetrelay_events_dropped_total":                           1,
	}
	for s, v := range want {
		if got := metric(t, base, s); got != v {
			t.Errorf("%s = %v, want %v", s, got, v)
		}
	}

	m.Connections(admin.Inbound).Dec()
	if got := metric(t, base, `jetrelay_connections_active{direction="inbound"}`); got != 0 {
		t.Errorf("inbound after Dec = %v", got)
	}
	// Queue depth follows the stream through the sampler.
	e := &queue.Envelope{From: "a@example.com", Domain: "example.net", Arrival: time.Now().Add(-time.Minute),
		Rcpts: []queue.Recipient{{Addr: "b@example.net"}}}
	msg := &queue.Message{Body: []byte("x\r\n"), Entries: []*queue.Envelope{e}}
	if err := q.Enqueue(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	relaytest.Eventually(t, "sampled depth", func() bool {
		return metric(t, base, `jetrelay_queue_depth{state="ready"}`) == 1 &&
			metric(t, base, `jetrelay_queue_oldest_age_seconds{state="ready"}`) >= 60
	})
}

func TestHealthReadyPProf(t *testing.T) {
	t.Parallel()
	q := queuetest.RunJetStream(t)
	var listening atomic.Bool
	listening.Store(true)
	_, base := startAdmin(t, admin.Options{Metrics: admin.NewMetrics(), Queue: q, PProf: true,
		Listening: func() error {
			if !listening.Load() {
				return errors.New("submission listeners closed")
			}
			return nil
		}})
	if code, _ := get(t, base+"/healthz"); code != 200 {
		t.Fatalf("healthz %d", code)
	}
	if code, body := get(t, base+"/readyz"); code != 200 {
		t.Fatalf("readyz %d %s", code, body)
	}
	if code, _ := get(t, base+"/debug/pprof/"); code != 200 {
		t.Fatalf("pprof %d", code)
	}
	listening.Store(false)
	if code, body := get(t, base+"/readyz"); code != 503 || !strings.Contains(body, "listeners") {
		t.Fatalf("readyz with listeners closed: %d %q", code, body)
	}
	listening.Store(true)
	q.Embedded().Shutdown()
	q.Embedded().WaitForShutdown()
	code, body := get(t, base+"/readyz")
	if code != 503 || !strings.Contains(body, "jetstream") {
		t.Fatalf("readyz with NATS down: %d %q", code, body)
	}
	if code, _ := get(t, base+"/healthz"); code != 200 {
		t.Fatalf("healthz with NATS down %d", code)
	}
}

func TestPProfOffByDefault(t *testing.T) {
	t.Parallel()
	q := queuetest.RunJetStream(t)
	_, base := startAdmin(t, admin.Options{Metrics: admin.NewMetrics(), Queue: q})
	if code, _ := get(t, base+"/debug/pprof/"); code != 404 {
		t.Fatalf("pprof without admin.pprof: %d", code)
	}
}

// The example dashboard charts every jetrelay series.
func TestDashboardCoversSeries(t *testing.T) {
	t.Parallel()
	m := admin.NewMetrics()
	m.Publish(&events.Event{Event: events.Rejected, SMTPEnh: "5.7.8"})
	m.Publish(&events.Event{Event: events.Delivery, Status: events.StatusDelivered, TLS: "TLS1.3"})
	if n := dashboardCharts(t, m.Registry()); n < 11 {
		t.Fatalf("gathered only %d families", n)
	}
}

// dashboardCharts fails t for each jetrelay family reg has that the
// example dashboard does not chart, and returns how many it has.
func dashboardCharts(t *testing.T, reg prometheus.Gatherer) int {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("../../scripts/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Targets []struct{ Expr string } `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("dashboard is not JSON: %v", err)
	}
	var exprs strings.Builder
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			exprs.WriteString(tg.Expr + "\n")
		}
	}
	for _, mf := range mfs {
		if name := mf.GetName(); strings.HasPrefix(name, "jetrelay_") && !strings.Contains(exprs.String(), name) {
			t.Errorf("dashboard does not chart %s", name)
		}
	}
	return len(mfs)
}
