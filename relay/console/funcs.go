package console

import (
	"fmt"
	"html/template"
	"strings"
	"time"
	"unicode/utf8"
)

// pageNames are the templates under assets/, each parsed with layout.html.
var pageNames = []string{"login", "error", "overview", "messages", "message", "live", "queue", "suppressions"}

func parsePages() (map[string]*template.Template, error) {
	out := map[string]*template.Template{}
	for _, n := range pageNames {
		t, err := template.New(n).Funcs(funcs).ParseFS(assets, "assets/layout.html", "assets/"+n+".html")
		if err != nil {
			return nil, fmt.Errorf("console: template %s: %w", n, err)
		}
		out[n] = t
	}
	return out, nil
}

// maxText bounds one value shown on a page (a reply, a header field): with
// the row limits of each page it keeps pages under 100 KB. `jetrelay logs`
// shows whole replies.
const maxText = 400

var funcs = template.FuncMap{
	"when":      when,
	"ago":       ago,
	"clip":      clip,
	"status":    statusClass,
	"list":      func(s ...string) []string { return s },
	"rcpts":     rcptSummary,
	"lastReply": lastReply,
}

// when formats a time for a page: UTC, seconds.
func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

// ago formats how long ago t was, briefly.
func ago(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return brief(time.Since(t))
}

// brief formats a duration: 45s, 12m, 3h5m, 2d4h.
func brief(d time.Duration) string {
	neg := d < 0
	if neg {
		d = -d
	}
	var s string
	switch {
	case d < time.Minute:
		s = fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		s = fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 24*time.Hour:
		s = fmt.Sprintf("%dh%dm", int(d.Hours()), int(d.Minutes())%60)
	default:
		s = fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
	}
	if neg {
		return "in " + s
	}
	return s + " ago"
}

// clip bounds a value shown on a page (html/template escapes it).
func clip(s string) string {
	if len(s) <= maxText {
		return s
	}
	cut := maxText
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + " …"
}

// statusClass maps a status or event kind to a CSS class.
func statusClass(s string) string {
	switch strings.ToLower(s) {
	case "delivered", "relayed", "accepted", "released", "retried", "unsuppressed":
		return "ok"
	case "deferred", "held", "queued", "mixed", "waiting":
		return "warn"
	case "failed", "bounced", "rejected", "expired", "deleted", "suppressed", "complaint":
		return "bad"
	}
	return "info"
}
