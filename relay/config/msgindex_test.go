package config

import (
	"strings"
	"testing"
)

// TestIndexMemoryWarning: a full index whose per-message server state
// would take more than a quarter of memory_limit is warned about, on the
// line that sets max_bytes (else memory_limit's); the defaults, an
// external NATS (the state is in its servers), an index turned off and no
// limit are not.
func TestIndexMemoryWarning(t *testing.T) {
	const head = "hostname: relay.example.com\n"
	cases := []struct {
		name, yaml string
		want       string // "" = no warning
	}{
		{"defaults", head, ""},
		{"default index, old 128MiB limit", head + "memory_limit: 128MiB\n",
			"line 2: memory_limit: a full index holds about 191739 summaries, about 38MiB"},
		{"large index", head + "events:\n  index: {max_bytes: 256MiB}\n",
			"line 3: events.index.max_bytes: a full index holds about 383479 summaries, about 75MiB of the " +
				"embedded server's memory (205 bytes each): more than a quarter of memory_limit 192MiB, so the GC " +
				"would run nearly all the time once it fills; raise memory_limit to at least 300MiB"},
		{"large index, large limit", head + "events:\n  index: {max_bytes: 256MiB}\nmemory_limit: 320MiB\n", ""},
		{"external NATS", head + "nats: {url: \"nats://n1:4222\"}\nevents:\n  index: {max_bytes: 1GiB}\n", ""},
		{"index off", head + "events:\n  index: {enabled: false, max_bytes: 1GiB}\n", ""},
		{"no limit", head + "events:\n  index: {max_bytes: 1GiB}\nmemory_limit: 0\n", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := Parse([]byte(c.yaml))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, w := range cfg.Warnings() {
				if strings.Contains(w.Error(), "full index") {
					got = append(got, w.Error())
				}
			}
			switch {
			case c.want == "" && len(got) != 0:
				t.Fatalf("warned: %q", got)
			case c.want != "" && (len(got) != 1 || !strings.HasPrefix(got[0], c.want)):
				t.Fatalf("warnings %q, want one starting %q", got, c.want)
			}
		})
	}
}
