package queue_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/rs/zerolog"
)

func TestRedactURL(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"nats://user:secret@h:4222", "nats://user:xxxxx@h:4222"},
		{"nats://s3cr3tt0ken@h:4222", "nats://xxxxx@h:4222"},
		{"tls://user:pa/ss#w?d@h:4222", "tls://user:xxxxx@h:4222"},
		{"user:secret@h:4222", "user:xxxxx@h:4222"},
		{"nats://a:one@h1:4222,nats://h2:4222, nats://tok@h3:4222",
			"nats://a:xxxxx@h1:4222,nats://h2:4222, nats://xxxxx@h3:4222"},
		{"nats://user:p%40ss@h", "nats://user:xxxxx@h"},
		{"nats://user:@h", "nats://user:xxxxx@h"},
	} {
		if got := queue.RedactURL(tc.in); got != tc.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestConnectErrorHidesCredentials: a failed connection to a NATS URL with
// credentials (a closed loopback port) names neither password nor token in
// its error or in the log.
func TestConnectErrorHidesCredentials(t *testing.T) {
	for _, url := range []string{
		"nats://user:secret-pw@127.0.0.1:1",
		"nats://secret-token@127.0.0.1:1",
		"nats://127.0.0.1:1,nats://user:secret-pw@127.0.0.1:2",
		"nats://user:secret-pw%zz@127.0.0.1:1", // does not parse
		"nats://user:pw%zzsecret@127.0.0.1:1",  // the parse error quotes the bad escape
	} {
		t.Run(url, func(t *testing.T) {
			var logs bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			q, err := queue.Connect(ctx, queue.Options{URL: url, Logger: zerolog.New(&logs)})
			if err == nil {
				q.Close()
				t.Fatal("connected to a closed port")
			}
			if !strings.Contains(err.Error(), "127.0.0.1:") {
				t.Errorf("error does not say where: %v", err)
			}
			for _, text := range []string{err.Error(), logs.String()} {
				if strings.Contains(text, "secret") {
					t.Fatalf("credentials leaked: %q", text)
				}
			}
			if errors.Unwrap(err) == nil {
				t.Error("the cause is not kept for errors.Is")
			}
		})
	}
}
