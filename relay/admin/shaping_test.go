package admin_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/jetrelay/jetrelay/relay/admin"
	"github.com/jetrelay/jetrelay/relay/shaping"
)

// TestShapingGauges: the per-provider shaping state appears on /metrics
// with the configured and effective limits, a failing read keeps the last
// state, and the example dashboard charts every shaping series.
func TestShapingGauges(t *testing.T) {
	t.Parallel()
	q := queuetest.RunJetStream(t)
	until := time.Now().Add(time.Hour)
	var fail atomic.Bool
	read := func(context.Context) ([]shaping.ProviderStatus, error) {
		if fail.Load() {
			return nil, errors.New("bucket unavailable")
		}
		return []shaping.ProviderStatus{
			{Name: "google", Connections: 3, Rate: 42, Waiting: 7, Reason: "rule google-rate",
				Limit:     shaping.Limits{Connections: 5, Rate: shaping.Rate{Count: 600, Per: time.Minute}},
				Effective: shaping.Rate{Count: 300, Per: time.Minute}, SuspendedUntil: &until},
			{Name: "yahoo", Limit: shaping.Limits{PerConnection: 20}},
		}, nil
	}
	m := admin.NewMetrics()
	_, base := startAdmin(t, admin.Options{Metrics: m, Queue: q, Shaping: read})
	want := map[string]float64{
		`jetrelay_shaping_connections{provider="google"}`:          3,
		`jetrelay_shaping_connections_limit{provider="google"}`:    5,
		`jetrelay_shaping_rate_limit{provider="google"}`:           10,
		`jetrelay_shaping_rate_effective{provider="google"}`:       5,
		`jetrelay_shaping_messages_last_minute{provider="google"}`: 42,
		`jetrelay_shaping_suspended{provider="google"}`:            1,
		`jetrelay_shaping_waiting{provider="google"}`:              7,
		`jetrelay_shaping_suspended{provider="yahoo"}`:             0,
		`jetrelay_shaping_rate_effective{provider="yahoo"}`:        0,
	}
	for s, v := range want {
		if got := metric(t, base, s); got != v {
			t.Errorf("%s = %v, want %v", s, got, v)
		}
	}
	fail.Store(true)
	if got := metric(t, base, `jetrelay_shaping_connections{provider="google"}`); got != 3 {
		t.Errorf("after a failed read: %v, want the last state 3", got)
	}
	dashboardCharts(t, m.Registry())
}
