package submit

import (
	"strings"
	"testing"
)

// BenchmarkSubmit measures DATA → enqueue of a 4 KiB message on one
// authenticated implicit-TLS connection (PIPELINING: MAIL, RCPT and DATA in
// one write) against a real embedded JetStream that fsyncs before acking.
func BenchmarkSubmit(b *testing.B) {
	h := start(b, testConfig(b))
	c := h.login(lnImplicit, appUser, appPass)
	msg := message("a@example.com", "")
	msg += strings.Repeat(strings.Repeat("x", 62)+"\r\n", (4096-len(msg))/64)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		c.send("MAIL FROM:<a@example.com>\r\nRCPT TO:<x@one.test>\r\nDATA\r\n")
		for _, want := range []int{250, 250, 354} {
			if r := c.read(); r.Code != want {
				b.Fatalf("got %v, want %d", r, want)
			}
		}
		c.send(msg + ".\r\n")
		if r := c.read(); r.Code != 250 {
			b.Fatalf("end of DATA: %v", r)
		}
	}
}
