package main

import (
	"runtime/debug"
	"testing"

	"github.com/jetrelay/jetrelay/relay/config"
)

// memory_limit sets the runtime's soft limit (0 removes it); GOMEMLIMIT in
// the environment wins over the file.
func TestMemoryLimit(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(before) })
	t.Setenv("GOMEMLIMIT", "")
	cfg := config.Default()
	if cfg.MemoryLimit != 192<<20 {
		t.Fatalf("default memory_limit %d, want 192MiB", cfg.MemoryLimit)
	}
	cfg.MemoryLimit = 96 << 20
	if got, from := applyMemoryLimit(cfg); got != 96<<20 || from != "memory_limit" || debug.SetMemoryLimit(-1) != 96<<20 {
		t.Fatalf("applied %d from %s; runtime has %d", got, from, debug.SetMemoryLimit(-1))
	}
	cfg.MemoryLimit = 0
	if got, _ := applyMemoryLimit(cfg); got != 0 || debug.SetMemoryLimit(-1) != noLimit {
		t.Fatalf("memory_limit 0 left %d in force", debug.SetMemoryLimit(-1))
	}
	t.Setenv("GOMEMLIMIT", "200MiB")
	debug.SetMemoryLimit(200 << 20) // what the runtime did at start
	cfg.MemoryLimit = 64 << 20
	if got, from := applyMemoryLimit(cfg); got != 200<<20 || from != "GOMEMLIMIT" {
		t.Fatalf("with GOMEMLIMIT set: %d from %s", got, from)
	}
}
