package config

import (
	"strings"
	"testing"
	"time"
)

// bounce_guard: percentages parsed, the submission default inherited,
// window and min_volume defaulted, an empty block opting out, and every
// bad value reported with its key.
func TestBounceGuardConfig(t *testing.T) {
	const user = "    - {name: %s, password_hash: \"$2a$10$Xbd3IkIjXcBBZD6GR3dDgea.fil8qX8529caIPtVQsKA5uq.N2g7m\", " +
		"allowed_from: [example.com]%s}\n"
	line := func(name, extra string) string {
		return strings.Replace(strings.Replace(user, "%s", name, 1), "%s", extra, 1)
	}
	doc := "hostname: relay.example.com\nsubmission:\n  bounce_guard: {pause: 10%}\n  users:\n" +
		line("shop", ", bounce_guard: {warn: 5%, pause: 12.5%, complaint_pause: 0.5%, window: 2h, min_volume: 50}") +
		line("news", "") + line("quiet", ", bounce_guard: {}")
	cfg, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	shop := cfg.GuardOf(cfg.Submission.Users[0])
	if shop == nil || shop.Warn.Frac != 0.05 || shop.Pause.Frac != 0.125 || shop.ComplaintPause.Frac != 0.005 ||
		shop.Window.D() != 2*time.Hour || shop.MinVolume != 50 || shop.ComplaintWarn.Frac != 0 {
		t.Errorf("shop: %+v", shop)
	}
	news := cfg.GuardOf(cfg.Submission.Users[1])
	if news == nil || news.Pause.Frac != 0.1 || news.Window.D() != 24*time.Hour || news.MinVolume != 200 {
		t.Errorf("news (the default): %+v", news)
	}
	if q := cfg.GuardOf(cfg.Submission.Users[2]); q != nil {
		t.Errorf("quiet opted out, got %+v", q)
	}

	bad := "hostname: relay.example.com\nsubmission:\n  users:\n" +
		line("shop", ", bounce_guard: {warn: 10%, pause: 5%, complaint_warn: 2, window: 1m, min_volume: -1}") +
		line("news", ", bounce_guard: {pause: 120%, warn: NaN%}")
	_, err = Parse([]byte(bad))
	for _, want := range []string{"users[0].bounce_guard.warn", "complaint_warn", "users[0].bounce_guard.window",
		"users[0].bounce_guard.min_volume", "120%", "NaN%"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v, want one naming %s", err, want)
		}
	}
}
