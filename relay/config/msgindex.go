package config

// EventsIndex configures the message index (events.index): per-message
// summaries and search terms derived from the events stream, read by the
// console's Messages search. Its retention is events.max_age (a week when
// that is 0).
type EventsIndex struct {
	// Enabled runs the indexer on this node (default true). Every node of
	// a cluster shares one durable consumer; a node with false only stops
	// contributing.
	Enabled *bool `yaml:"enabled"`
	// MaxBytes bounds the summaries' bucket (about 650 bytes a message);
	// the search terms get half of it beside. When full, the least
	// recently updated summaries are dropped first.
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
