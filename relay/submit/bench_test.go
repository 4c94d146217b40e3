package submit

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// BenchmarkSubmit measures DATA → enqueue of a 4 KiB and a 100 KiB message
// on one authenticated implicit-TLS connection (PIPELINING: MAIL, RCPT and
// DATA in one write) against a real embedded JetStream that fsyncs before
// acking; with SIZE= declared at MAIL (the buffer sized at once) and
// without (grown while the data arrives).
func BenchmarkSubmit(b *testing.B) {
	h := start(b, testConfig(b))
	c := h.login(lnImplicit, appUser, appPass)
	for _, size := range []int{4 << 10, 100 << 10} {
		msg := message("a@example.com", "")
		msg += strings.Repeat(strings.Repeat("x", 62)+"\r\n", (size-len(msg))/64)
		for _, sized := range []bool{false, true} {
			mail := "MAIL FROM:<a@example.com>"
			if sized {
				mail += " SIZE=" + strconv.Itoa(len(msg))
			}
			b.Run(fmt.Sprintf("%dKiB/size=%v", size>>10, sized), func(b *testing.B) {
				b.SetBytes(int64(len(msg)))
				b.ReportAllocs()
				for b.Loop() {
					c.send(mail + "\r\nRCPT TO:<x@one.test>\r\nDATA\r\n")
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
			})
		}
	}
}

// BenchmarkNormalize compares normalize's line-at-a-time check with the
// byte loop it skips for canonical messages (4 KiB and 100 KiB).
func BenchmarkNormalize(b *testing.B) {
	for _, size := range []int{4 << 10, 100 << 10} {
		msg := []byte(strings.Repeat(strings.Repeat("x", 76)+"\r\n", size/78))
		for _, v := range []struct {
			name string
			f    func([]byte, bool, int) ([]byte, error)
		}{{"lines", normalize}, {"loop", normalizeLoop}} {
			b.Run(v.name+"/"+strconv.Itoa(size>>10)+"KiB", func(b *testing.B) {
				b.SetBytes(int64(len(msg)))
				for b.Loop() {
					if _, err := v.f(msg, false, 998); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
