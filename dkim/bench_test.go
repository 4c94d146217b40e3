package dkim

import (
	"fmt"
	"testing"
)

// BenchmarkSign measures one Sign call (header scan, body hash, signature)
// for each key type and message size; signing runs in the submission
// goroutine, so this is the latency DATA adds per key.
func BenchmarkSign(b *testing.B) {
	keys := []struct {
		name string
		key  testKey
	}{
		{"rsa-2048", testKey{"example.com", "s1", rsaKeyA(), false}},
		{"ed25519", testKey{"example.com", "s1", edKeyA(), false}},
	}
	sizes := []struct {
		name string
		n    int
	}{{"4KiB", 4 << 10}, {"1MiB", 1 << 20}}
	for _, k := range keys {
		s, _ := setup(b, Options{}, k.key)
		for _, size := range sizes {
			msg := message("a@example.com", size.n)
			b.Run(fmt.Sprintf("%s/%s", k.name, size.name), func(b *testing.B) {
				b.SetBytes(int64(len(msg)))
				b.ReportAllocs()
				for b.Loop() {
					if _, _, err := s.Sign(msg); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkSignHostileHeader: a hostile header (hostileHeader) must cost
// milliseconds, not the seconds go-msgauth's quadratic unfolding would.
func BenchmarkSignHostileHeader(b *testing.B) {
	s, _ := setup(b, Options{}, testKey{"example.com", "s1", edKeyA(), false})
	msg := hostileHeader()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if _, _, err := s.Sign(msg); err != nil {
			b.Fatal(err)
		}
	}
}
