package config

import (
	"strings"
	"testing"
)

// TestNATSURLProblemHidesPassword: a nats.url entry without a scheme is
// reported by position, never quoted (it may carry a password).
func TestNATSURLProblemHidesPassword(t *testing.T) {
	_, err := Parse([]byte("hostname: x\nnats:\n  url: \"nats://h1:4222,user:secret@h2:4222\"\n"))
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	if !strings.Contains(msg, "line 3: nats.url: entry 2 is not a URL") || strings.Contains(msg, "secret") {
		t.Fatalf("error %q", err)
	}
}
