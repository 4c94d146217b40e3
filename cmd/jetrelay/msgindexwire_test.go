package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/jetrelay/jetrelay/relay/msgindex"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// TestServeIndexesMessages: a message submitted to a running relay whose
// delivery is deferred (closed port) shows up in the message index with
// its recipient's state, and a search by recipient finds it.
func TestServeIndexesMessages(t *testing.T) {
	c := writeRelayConfig(t)
	startRelay(t, c.cfgPath, c.subAddr)
	id := submitOne(t, c, []byte("From: app@example.com\r\nTo: user@example.net\r\nSubject: hi\r\n\r\nhello\r\n"))
	pass, err := os.ReadFile(filepath.Join(c.dir, "data", queue.PasswordFileName))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect("nats://"+c.natsAddr, nats.UserInfo(queue.EmbeddedUser, strings.TrimSpace(string(pass))))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	x, err := msgindex.Open(ctx, js, msgindex.Options{Retention: 7 * 24 * time.Hour, Log: zerolog.New(zerolog.NewTestWriter(t))})
	if err != nil {
		t.Fatal(err)
	}
	var s msgindex.Summary
	queuetest.Eventually(t, 90*time.Second, "summary with the deferred recipient", func() bool {
		s, err = x.Get(ctx, id)
		return err == nil && s.Status == msgindex.StatusDeferred
	})
	if s.From != "app@example.com" || s.User != c.user || len(s.Rcpts) != 1 || s.Rcpts[0].Addr != "user@example.net" {
		t.Fatalf("summary: %+v", s)
	}
	p, err := x.Search(ctx, msgindex.Query{Rcpt: "@example.net"})
	if err != nil || len(p.Items) != 1 || p.Items[0].QueueID != id {
		t.Fatalf("search by domain: %+v, %v", p, err)
	}
}
