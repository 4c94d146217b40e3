package msgindex

import (
	"fmt"
	"testing"
)

// TestRecentBounded: the remembered summaries stay at recentSize, the
// oldest go first, a rewrite keeps one slot, and forget drops one.
func TestRecentBounded(t *testing.T) {
	c := newRecent()
	for i := range recentSize + 10 {
		c.put(fmt.Sprint(i), uint64(i), []byte{byte(i)})
	}
	c.put(fmt.Sprint(recentSize+5), 99, nil) // rewrite: no new slot
	if len(c.byID) != recentSize || len(c.order) != recentSize {
		t.Fatalf("%d remembered, %d slots; want %d", len(c.byID), len(c.order), recentSize)
	}
	for _, id := range []string{"0", "9"} {
		if _, ok := c.get(id); ok {
			t.Fatalf("%s still remembered after %d newer writes", id, recentSize)
		}
	}
	if e, ok := c.get(fmt.Sprint(recentSize + 5)); !ok || e.rev != 99 {
		t.Fatalf("rewritten entry: %+v %v", e, ok)
	}
	c.forget("10")
	if _, ok := c.get("10"); ok {
		t.Fatal("forgotten entry still there")
	}
}
