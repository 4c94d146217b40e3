package shaping

import (
	"context"
	"testing"
	"time"
)

// BenchmarkSend is Send without limits (no shaping configured): no bucket,
// no allocation.
func BenchmarkSend(b *testing.B) {
	s := &Shaper{classes: map[string]*class{}, held: map[*Conn]struct{}{}, now: time.Now}
	s.set.Store(compile(Settings{}, 1))
	conn, _, ok := s.Connect(context.Background(), s.Classify("example.com", []string{"mx.example.com"}), "")
	if !ok {
		b.Fatal("connect refused")
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := conn.Send(ctx); !ok {
			b.Fatal("send refused")
		}
	}
}

// BenchmarkSendProvider is Send for a provider without a rate.
func BenchmarkSendProvider(b *testing.B) {
	s := &Shaper{classes: map[string]*class{}, held: map[*Conn]struct{}{}, now: time.Now}
	s.set.Store(compile(provider(Limits{}), 1))
	conn, _, ok := s.Connect(context.Background(), classP, "")
	if !ok {
		b.Fatal("connect refused")
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := conn.Send(ctx); !ok {
			b.Fatal("send refused")
		}
	}
}
