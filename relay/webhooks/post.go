package webhooks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode"

	"github.com/nats-io/nats.go/jetstream"
)

const (
	// maxReplyShown bounds the part of a failed reply's body kept for the
	// log line and the status; maxReplyRead bounds what is read at all
	// (the rest is left unread and the connection closed).
	maxReplyShown = 200
	maxReplyRead  = 64 << 10
	userAgent     = "jetrelay-webhook"
)

// StatusError is a reply other than 2xx.
type StatusError struct {
	Code int
	Body string // the start of the reply's body, printable
}

func (e *StatusError) Error() string {
	if e.Body == "" {
		return fmt.Sprintf("HTTP %d", e.Code)
	}
	return fmt.Sprintf("HTTP %d: %s", e.Code, e.Body)
}

// Post sends payloads to h.URL as one signed JSON array and returns nil
// for a 2xx reply. The whole exchange is bounded by h.Timeout (at most
// MaxTimeout) and the reply's body by maxReplyRead.
func Post(ctx context.Context, c *http.Client, h Hook, payloads []Payload) error {
	body, err := json.Marshal(payloads)
	if err != nil {
		return err
	}
	timeout := h.Timeout
	if timeout <= 0 || timeout > MaxTimeout {
		timeout = MaxTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", userAgent)
	req.Header.Set(SignatureHeader, Sign(h.Secret, time.Now(), body))
	resp, err := c.Do(req)
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("no reply within %s", timeout)
		}
		return err
	}
	defer resp.Body.Close()
	head, _ := io.ReadAll(io.LimitReader(resp.Body, maxReplyShown))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxReplyRead))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	return &StatusError{Code: resp.StatusCode, Body: printable(string(head))}
}

// printable keeps a reply's text fit for a log line: control characters
// become spaces, invalid UTF-8 is replaced.
func printable(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.TrimSpace(strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s))
}

// succeeded records a batch's success in the status bucket.
func (s *sender) succeeded(n int) {
	now := time.Now().UTC()
	s.writeStatus(func(st *Status) {
		st.LastSuccess, st.Failing = &now, 0
	})
	s.log.Debug().Str("event", "webhook_sent").Int("events", n).Msg("webhook batch accepted")
}

// failed records a failed POST (a log line and the status bucket).
func (s *sender) failed(err error, fails, left int) {
	now := time.Now().UTC()
	s.writeStatus(func(st *Status) {
		st.LastError, st.LastErrorAt, st.Failing = err.Error(), &now, fails
	})
	s.log.Warn().Str("event", "webhook_failed").Err(err).Int("attempt", fails).Int("events", left).
		Msg("webhook POST failed; retrying with backoff")
}

// writeStatus updates the webhook's status entry (read, change, put).
func (s *sender) writeStatus(change func(*Status)) {
	if s.o.KV == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), statusWrite)
	defer cancel()
	var st Status
	if e, err := s.o.KV.Get(ctx, s.hook.Name); err == nil {
		_ = json.Unmarshal(e.Value(), &st)
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		s.log.Debug().Err(err).Msg("webhook status not read")
	}
	change(&st)
	st.Node = s.o.Node
	raw, _ := json.Marshal(st)
	if _, err := s.o.KV.Put(ctx, s.hook.Name, raw); err != nil {
		s.log.Warn().Str("event", "webhook_status_failed").Err(err).Msg("webhook status not stored")
	}
}
