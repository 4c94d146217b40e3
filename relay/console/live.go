package console

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/jetrelay/jetrelay/relay/events"
)

// Live stream bounds.
const (
	liveKeepalive    = 15 * time.Second
	liveWriteTimeout = 30 * time.Second
	maxFilterLen     = 255
)

// liveRow is one event as the Live page's script receives it (JSON; the
// script sets it as text, never as markup).
type liveRow struct {
	Time    string `json:"time"`
	Event   string `json:"event"`
	Status  string `json:"status,omitempty"`
	Class   string `json:"class"`
	QueueID string `json:"queue_id,omitempty"`
	Rcpt    string `json:"rcpt,omitempty"`
	Domain  string `json:"domain,omitempty"`
	MX      string `json:"mx,omitempty"`
	Reply   string `json:"reply,omitempty"`
	Actor   string `json:"actor,omitempty"`
}

// liveFilter is the Live page's form.
type liveFilter struct {
	Domain, Status string
}

func liveFilterOf(r *http.Request) liveFilter {
	q := r.URL.Query()
	f := liveFilter{Domain: q.Get("domain"), Status: q.Get("status")}
	if len(f.Domain) > maxFilterLen {
		f.Domain = f.Domain[:maxFilterLen]
	}
	if len(f.Status) > maxFilterLen {
		f.Status = f.Status[:maxFilterLen]
	}
	return f
}

// live is the page; its script opens /console/live/events.
func (c *Console) live(w http.ResponseWriter, r *http.Request, s *session) {
	c.render(w, http.StatusOK, "live", newPage(s, "Live", "live", liveFilterOf(r)))
}

// liveEvents streams new events as Server-Sent Events (one "message" per
// event, data = liveRow JSON) until the client goes, the session expires
// or the console shuts down. At most MaxStreams run at once.
func (c *Console) liveEvents(w http.ResponseWriter, r *http.Request, s *session) {
	select {
	case c.streams <- struct{}{}:
		defer func() { <-c.streams }()
	default:
		http.Error(w, "too many live streams; close one and try again", http.StatusServiceUnavailable)
		return
	}
	ctx, cancel := context.WithDeadline(r.Context(), s.Expires)
	defer cancel()
	go func() {
		select {
		case <-c.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	rc := http.NewResponseController(w)
	// The admin server's read timeout must not end a stream: net/http
	// cancels the request when its background read of the idle
	// connection times out.
	_ = rc.SetReadDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, ": stream open\n\n")
	if err := rc.Flush(); err != nil {
		return
	}
	f := liveFilterOf(r)
	out := make(chan liveRow, 64)
	go func() {
		defer close(out)
		err := events.Tail(ctx, c.o.JetStream, events.Filter{Domain: f.Domain, Status: f.Status, FromNow: true,
			Follow: true}, func(rec events.Record) error {
			select {
			case out <- rowOf(rec.Event):
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			c.log.Warn().Err(err).Str("event", "console_live_failed").Msg("console live stream ended")
		}
	}()
	c.pump(ctx, w, out)
}

// pump writes rows and keep-alive comments until out closes, ctx ends or
// a write fails; each write must be taken by the client within
// liveWriteTimeout (a client that stops reading does not hold the stream).
func (c *Console) pump(ctx context.Context, w http.ResponseWriter, out <-chan liveRow) {
	rc := http.NewResponseController(w)
	send := func(s string) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(liveWriteTimeout))
		_, err := io.WriteString(w, s)
		return err == nil && rc.Flush() == nil
	}
	tick := time.NewTicker(liveKeepalive)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if !send(": keep-alive\n\n") {
				return
			}
		case row, ok := <-out:
			if !ok {
				send("event: end\ndata: {}\n\n")
				return
			}
			b, _ := json.Marshal(row)
			if !send("data: " + string(b) + "\n\n") {
				return
			}
		}
	}
}

func rowOf(e *events.Event) liveRow {
	return liveRow{Time: when(e.Time), Event: e.Event, Status: e.Status, Class: statusClass(orStr(e.Status, e.Event)),
		QueueID: e.QueueID, Rcpt: clip(e.Rcpt), Domain: e.Domain, MX: e.MX, Reply: clip(replyOf(e)), Actor: e.Actor}
}

func orStr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
