package msgindex

import "sync"

// recentSize bounds the summaries the indexer remembers: a message's
// events mostly come within seconds of each other (accepted, then the
// delivery outcome), so the last few thousand writes cover them.
const recentSize = 4096

// recent remembers the summaries this indexer wrote last, with their
// revisions, so the next event of a message is folded without reading the
// summary back. Reading it back was a direct get that loads the summary's
// block (8 MiB: the bucket's max_bytes makes nats-server pick its largest
// block size) into the server's cache: after a burst, many such loads put
// the heap near memory_limit and the GC to work. Correctness stays with
// the compare-and-set: a remembered revision another node has moved past
// makes the write fail, and store reads the stored summary again.
type recent struct {
	mu    sync.Mutex
	byID  map[string]recentEntry
	order []string // ring of ids, oldest at next
	next  int
}

type recentEntry struct {
	rev  uint64
	data []byte
}

func newRecent() *recent {
	return &recent{byID: make(map[string]recentEntry, recentSize), order: make([]string, 0, recentSize)}
}

// get returns id's remembered summary.
func (c *recent) get(id string) (recentEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.byID[id]
	return e, ok
}

// put remembers id's summary data stored at rev, forgetting the oldest.
func (c *recent) put(id string, rev uint64, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.byID[id]; !ok {
		if len(c.order) < recentSize {
			c.order = append(c.order, id)
		} else {
			delete(c.byID, c.order[c.next])
			c.order[c.next] = id
			c.next = (c.next + 1) % recentSize
		}
	}
	c.byID[id] = recentEntry{rev: rev, data: data}
}

// forget drops id (its remembered revision lost a compare-and-set).
func (c *recent) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.byID, id) // its slot in order is reused when it comes round
}
