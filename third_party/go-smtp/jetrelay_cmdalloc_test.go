package smtp

import (
	"runtime"
	"testing"
)

// TestPipelineCommandsSmall: the pipelined commands of a plain message are
// encoded as before, in well under the 2 × 2048 bytes the command builders
// used to reserve for every MAIL and RCPT.
func TestPipelineCommandsSmall(t *testing.T) {
	c := &Client{ext: map[string]string{"8BITMIME": "", "SIZE": "", "PIPELINING": ""}}
	rcpts := []PipelinedRcpt{{Addr: "b@example.org"}, {Addr: "c@example.org"}}
	got, err := c.pipelineCommands("a@example.com", &MailOptions{Size: 4096}, rcpts)
	want := "MAIL FROM:<a@example.com> BODY=8BITMIME SIZE=4096\r\nRCPT TO:<b@example.org>\r\nRCPT TO:<c@example.org>\r\nDATA\r\n"
	if err != nil || string(got) != want {
		t.Fatalf("got %q, %v; want %q", got, err, want)
	}
	const runs = 200
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := 0; i < runs; i++ {
		if _, err := c.pipelineCommands("a@example.com", &MailOptions{Size: 4096}, rcpts); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / runs; per > 1024 {
		t.Errorf("%d bytes allocated per pipelined transaction, want at most 1024", per)
	}
}
