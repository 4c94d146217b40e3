package config

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Webhook posts delivery events to an application (top-level webhooks):
// each is one durable consumer on the events stream, sent once per
// cluster, in order, at least once.
type Webhook struct {
	// Name identifies the webhook in logs, metrics and `jetrelay webhooks`;
	// letters, digits, - and _ (it names the events stream's consumer).
	Name string `yaml:"name"`
	// URL receives a POST of a JSON array of events; https://, or
	// http:// (check warns unless the host is loopback).
	URL string `yaml:"url"`
	// Events are the event types sent: delivered, deferred, failed,
	// bounced, delay_notice, suppressed, complaint, paused,
	// bounce_rate_warning; empty = all of them.
	Events []string `yaml:"events"`
	// Users limits the events to these users' mail; empty = all users
	// (events that belong to no user, such as a suppression an operator
	// added, are sent only when Users is empty).
	Users []string `yaml:"users"`
	// SecretFile holds the HMAC-SHA256 key of the Jetrelay-Signature header
	// (a trailing newline is not part of it).
	SecretFile string `yaml:"secret_file"`
	// Batch bounds one POST: at most Max events (default 100, at most
	// 1000), sent at the latest Wait (default 1s) after the first.
	Batch WebhookBatch `yaml:"batch"`
	// Retry bounds how long failing POSTs are retried (with backoff from
	// seconds up to 5 minutes): events older than MaxAge (default 24h)
	// are then dropped, with a log line and a metric.
	Retry WebhookRetry `yaml:"retry"`
	// Timeout bounds one POST, response included (default 10s).
	Timeout Duration `yaml:"timeout"`
}

// WebhookBatch bounds the events of one POST.
type WebhookBatch struct {
	Max  int      `yaml:"max"`  // events per POST (default 100)
	Wait Duration `yaml:"wait"` // how long to gather a batch (default 1s)
}

// WebhookRetry bounds the retries of failing POSTs.
type WebhookRetry struct {
	MaxAge Duration `yaml:"max_age"` // events older than this are dropped after a failure (default 24h)
}

// WebhookEvents are the event types a webhook may name in events.
var WebhookEvents = []string{
	"delivered", "deferred", "failed", "bounced", "delay_notice",
	"suppressed", "complaint", "paused", "bounce_rate_warning",
}

// Webhook limits and defaults.
const (
	DefaultWebhookBatch   = 100
	MaxWebhookBatch       = 1000
	DefaultWebhookWait    = time.Second
	MaxWebhookWait        = time.Minute
	DefaultWebhookMaxAge  = 24 * time.Hour
	DefaultWebhookTimeout = 10 * time.Second
	MaxWebhookTimeout     = 2 * time.Minute
)

var webhookName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// applyWebhookDefaults fills what a webhook leaves out.
func (c *Config) applyWebhookDefaults() {
	for i := range c.Webhooks {
		w := &c.Webhooks[i]
		if w.Batch.Max == 0 {
			w.Batch.Max = DefaultWebhookBatch
		}
		if w.Batch.Wait == 0 {
			w.Batch.Wait = Duration(DefaultWebhookWait)
		}
		if w.Retry.MaxAge == 0 {
			w.Retry.MaxAge = Duration(DefaultWebhookMaxAge)
		}
		if w.Timeout == 0 {
			w.Timeout = Duration(DefaultWebhookTimeout)
		}
	}
}

// WantsEvent reports whether the webhook sends events of type typ.
func (w Webhook) WantsEvent(typ string) bool {
	return len(w.Events) == 0 || slices.Contains(w.Events, typ)
}

// validateWebhooks checks every webhook and that names are unique.
func (c *Config) validateWebhooks(ps *problems) {
	seen := map[string]bool{}
	for i, w := range c.Webhooks {
		p := fmt.Sprintf("webhooks[%d]", i)
		switch {
		case !webhookName.MatchString(w.Name):
			ps.add(p+".name", "%q must be 1 to 64 letters, digits, - or _", w.Name)
		case seen[w.Name]:
			ps.add(p+".name", "%q is used by another webhook", w.Name)
		}
		seen[w.Name] = true
		if _, err := WebhookURL(w.URL); err != nil {
			ps.add(p+".url", "%v", err)
		}
		for j, e := range w.Events {
			oneOf(ps, fmt.Sprintf("%s.events[%d]", p, j), e, WebhookEvents)
		}
		for j, u := range w.Users {
			if strings.TrimSpace(u) == "" {
				ps.add(fmt.Sprintf("%s.users[%d]", p, j), "must name a user")
			}
		}
		if w.SecretFile == "" {
			ps.add(p+".secret_file", "name the file holding the signing secret")
		} else if _, err := ReadWebhookSecret(w.SecretFile); err != nil {
			ps.add(p+".secret_file", "%v", err)
		}
		if w.Batch.Max < 1 || w.Batch.Max > MaxWebhookBatch {
			ps.add(p+".batch.max", "must be between 1 and %d", MaxWebhookBatch)
		}
		if w.Batch.Wait.D() < 0 || w.Batch.Wait.D() > MaxWebhookWait {
			ps.add(p+".batch.wait", "must be between 0s and %s", MaxWebhookWait)
		}
		if w.Retry.MaxAge.D() < time.Second {
			ps.add(p+".retry.max_age", "must be at least 1s")
		}
		if w.Timeout.D() < 100*time.Millisecond || w.Timeout.D() > MaxWebhookTimeout {
			ps.add(p+".timeout", "must be between 100ms and %s", MaxWebhookTimeout)
		}
	}
}

// maxSecretBytes bounds a webhook's secret file.
const maxSecretBytes = 4096

// ReadWebhookSecret reads a webhook's signing secret: the file's content
// without its trailing newline (CR LF or LF); it must not be empty.
func ReadWebhookSecret(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("secret: %w", err)
	}
	defer f.Close()
	buf := make([]byte, maxSecretBytes+1)
	n, _ := f.Read(buf)
	if n > maxSecretBytes {
		return nil, fmt.Errorf("secret file %s is longer than %d bytes", path, maxSecretBytes)
	}
	s := []byte(strings.TrimRight(string(buf[:n]), "\r\n"))
	if len(s) == 0 {
		return nil, fmt.Errorf("secret file %s is empty", path)
	}
	return s, nil
}

// WebhookURL parses a webhook URL: http or https with a host.
func WebhookURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%q is not an http:// or https:// URL", raw)
	}
	return u, nil
}

// webhookWarnings warns of webhooks posting in clear text to another host.
func (c *Config) webhookWarnings() []Problem {
	var out []Problem
	for i, w := range c.Webhooks {
		u, err := WebhookURL(w.URL)
		if err != nil || u.Scheme != "http" || loopbackHost(u.Hostname()) {
			continue
		}
		out = append(out, Problem{Path: fmt.Sprintf("webhooks[%d].url", i),
			Line: c.Line("webhooks", fmt.Sprint(i), "url"),
			Msg:  "http:// sends events (recipients, metadata) unencrypted to another host; use https://"})
	}
	return out
}

// loopbackHost reports whether host is localhost or a loopback address.
func loopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
