package config

import "fmt"

// EventsIndex configures the message index (events.index): per-message
// summaries and search terms derived from the events stream, read by the
// console's Messages search. Its retention is events.max_age (a week when
// that is 0).
type EventsIndex struct {
	// Enabled runs the indexer on this node (default true). Every node of
	// a cluster shares one durable consumer; a node with false only stops
	// contributing.
	Enabled *bool `yaml:"enabled"`
	// MaxBytes bounds the summaries' bucket (about 700 bytes a message as
	// stored, so 128MiB holds about 190,000 messages); the search terms get
	// half of it beside. When full, the least recently updated summaries
	// are dropped first. Each summary also costs about 205 bytes of the
	// embedded server's memory: keep a full index under a quarter of
	// memory_limit (jetrelay check warns).
	MaxBytes Size `yaml:"max_bytes"`
}

// On reports whether the indexer runs (default true).
func (x EventsIndex) On() bool { return x.Enabled == nil || *x.Enabled }

// minIndexBytes is the smallest events.index.max_bytes accepted.
const minIndexBytes = 1 << 20

func (c *Config) validateEventsIndex(ps *problems) {
	if c.Events.Index.MaxBytes < minIndexBytes {
		ps.add("events.index.max_bytes", "must be at least 1MiB")
	}
}

// The embedded nats-server keeps per-subject state for every key of the
// summaries' bucket, one key per message: about 205 bytes of heap each,
// measured with 100,000 keys (docs/performance.md "Memory"), while a
// summary takes about 700 bytes of the bucket's max_bytes as stored.
const (
	summaryStoredBytes = 700
	summaryServerHeap  = 205
)

// indexHeap is the embedded server's heap for a full index: the most
// summaries max_bytes holds, each with its per-subject state.
func (x EventsIndex) indexHeap() int64 {
	return int64(x.MaxBytes) / summaryStoredBytes * summaryServerHeap
}

// indexMemoryWarning: with the embedded server, a full index whose
// per-message state takes more than a quarter of memory_limit leaves too
// little room for the block caches (~50 MiB), a deep queue and the mail's
// own allocations: the GC then runs nearly all the time (with 128MiB, a
// fifth of it taken by 120,000 summaries and 100,000 deferred messages
// waiting, fresh mail ran at 61-74 % of its rate; docs/performance.md).
func (c *Config) indexMemoryWarning() []Problem {
	x := c.Events.Index
	if c.NATS.URL != "" || !x.On() || c.MemoryLimit == 0 || x.indexHeap() <= int64(c.MemoryLimit)/4 {
		return nil
	}
	p := Problem{Path: "events.index.max_bytes", Msg: fmt.Sprintf(
		"a full index holds about %d summaries, about %s of the embedded server's memory (%d bytes each): more "+
			"than a quarter of memory_limit %s, so the GC would run nearly all the time once it fills; raise "+
			"memory_limit to at least %s or lower events.index.max_bytes",
		int64(x.MaxBytes)/summaryStoredBytes, mib(x.indexHeap()), summaryServerHeap, mib(int64(c.MemoryLimit)),
		mib(4*x.indexHeap()))}
	if c.has("events", "index", "max_bytes") {
		p.Line = c.Line("events", "index", "max_bytes")
	} else if c.has("memory_limit") {
		p.Path, p.Line = "memory_limit", c.Line("memory_limit")
	}
	return []Problem{p}
}

// mib writes n bytes in whole MiB, rounded up ("192MiB").
func mib(n int64) string { return fmt.Sprintf("%dMiB", (n+1<<20-1)>>20) }
