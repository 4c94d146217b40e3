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

// gc_percent sets the GC's pace; GOGC in the environment wins over the file.
func TestGCPercent(t *testing.T) {
	before := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(before) })
	t.Setenv("GOGC", "")
	cfg := config.Default()
	if cfg.GCPercent != 70 {
		t.Fatalf("default gc_percent %d, want 70", cfg.GCPercent)
	}
	if got, from := applyGCPercent(cfg); got != 70 || from != "gc_percent" || gcPercentInForce() != 70 {
		t.Fatalf("applied %d from %s; runtime has %d", got, from, gcPercentInForce())
	}
	cfg.GCPercent = -1
	if got, _ := applyGCPercent(cfg); got != -1 || gcPercentInForce() != -1 {
		t.Fatalf("gc_percent -1 left %d in force", gcPercentInForce())
	}
	t.Setenv("GOGC", "150")
	debug.SetGCPercent(150) // what the runtime did at start
	cfg.GCPercent = 50
	if got, from := applyGCPercent(cfg); got != 150 || from != "GOGC" || gcPercentInForce() != 150 {
		t.Fatalf("with GOGC set: %d from %s; runtime has %d", got, from, gcPercentInForce())
	}
	if got, from := gcPercent(); got != 150 || from != "GOGC" {
		t.Fatalf("gcPercent() = %d, %s", got, from)
	}
}
