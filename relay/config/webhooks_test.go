package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func hookSecret(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "hook.secret")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// A webhook gets its defaults, and its secret is the file without the
// trailing newline.
func TestWebhookDefaultsAndSecret(t *testing.T) {
	sf := hookSecret(t, "abc\r\n")
	c, err := Parse([]byte("hostname: relay.example.com\nwebhooks:\n  - {name: app, url: 'https://app.example.com/h', secret_file: " + sf + "}\n"))
	if err != nil {
		t.Fatal(err)
	}
	w := c.Webhooks[0]
	if w.Batch.Max != 100 || w.Batch.Wait.D() != time.Second || w.Retry.MaxAge.D() != 24*time.Hour ||
		w.Timeout.D() != 10*time.Second || !w.WantsEvent("complaint") {
		t.Fatalf("defaults: %+v", w)
	}
	s, err := ReadWebhookSecret(sf)
	if err != nil || string(s) != "abc" {
		t.Fatalf("secret %q, %v", s, err)
	}
	if len(c.Warnings()) != 0 {
		t.Fatalf("warnings for an https webhook: %v", c.Warnings())
	}
}

// Every problem of the webhooks section is reported with its path.
func TestWebhookProblems(t *testing.T) {
	sf := hookSecret(t, "k")
	empty := hookSecret(t, "\n")
	yaml := "webhooks:\n" +
		"  - {name: app, url: 'https://a.example/h', secret_file: " + sf + ", events: [delivered, deliverd]}\n" +
		"  - {name: app, url: 'ftp://a.example/h', secret_file: /nonexistent/secret}\n" +
		"  - {name: 'bad name', url: 'https://a.example/h', secret_file: " + empty + ", batch: {max: 5000, wait: 2m}, " +
		"retry: {max_age: 1ms}, timeout: 1h}\n"
	_, err := Parse([]byte(yaml))
	if err == nil {
		t.Fatal("no problems")
	}
	for _, want := range []string{
		`webhooks[0].events[1]: "deliverd" is not one of`, `did you mean "delivered"`,
		`webhooks[1].name: "app" is used by another webhook`, `webhooks[1].url: "ftp://a.example/h" is not an http`,
		`webhooks[1].secret_file: secret:`, `webhooks[2].name: "bad name" must be`, `webhooks[2].secret_file: secret file`,
		`webhooks[2].batch.max: must be between 1 and 1000`, `webhooks[2].batch.wait: must be between`,
		`webhooks[2].retry.max_age: must be at least 1s`, `webhooks[2].timeout: must be between`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("no problem %q in:\n%v", want, err)
		}
	}
}

// http:// is warned about unless the host is loopback.
func TestWebhookHTTPWarning(t *testing.T) {
	sf := hookSecret(t, "k")
	c, err := Parse([]byte("hostname: relay.example.com\nwebhooks:\n" +
		"  - {name: local, url: 'http://127.0.0.1:8080/h', secret_file: " + sf + "}\n" +
		"  - {name: local6, url: 'http://[::1]/h', secret_file: " + sf + "}\n" +
		"  - {name: lh, url: 'http://localhost/h', secret_file: " + sf + "}\n" +
		"  - {name: remote, url: 'http://app.example.com/h', secret_file: " + sf + "}\n"))
	if err != nil {
		t.Fatal(err)
	}
	ws := c.Warnings()
	if len(ws) != 1 || ws[0].Path != "webhooks[3].url" || ws[0].Line != 6 || !strings.Contains(ws[0].Msg, "https://") {
		t.Fatalf("warnings %+v", ws)
	}
}

// Webhooks are applied on reload.
func TestWebhooksReloadLive(t *testing.T) {
	if ClassOf("webhooks[].url") != Live || ClassOf("webhooks") != Live {
		t.Fatal("webhooks are not live")
	}
}
