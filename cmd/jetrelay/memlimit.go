package main

import (
	"os"
	"runtime/debug"
	"runtime/metrics"

	"github.com/jetrelay/jetrelay/relay/config"
)

// applyMemoryLimit sets the Go runtime's soft memory limit from the
// configuration (memory_limit), unless GOMEMLIMIT is set in the
// environment, which the runtime has applied already. It returns the limit
// in force (0: none) and where it came from.
//
// The limit is soft: near it the GC runs more often (at most about half of
// the CPU), it never makes an allocation fail. Above the live state, most
// of jetrelay's heap is the embedded nats-server's message-block caches;
// without a limit Go lets the heap grow to twice the live state before
// collecting them (DESIGN-NOTES "A soft memory limit").
func applyMemoryLimit(cfg *config.Config) (int64, string) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return limitInForce(debug.SetMemoryLimit(-1)), "GOMEMLIMIT"
	}
	if cfg.MemoryLimit > 0 {
		debug.SetMemoryLimit(int64(cfg.MemoryLimit))
		return int64(cfg.MemoryLimit), "memory_limit"
	}
	debug.SetMemoryLimit(noLimit)
	return 0, "memory_limit"
}

// applyGCPercent sets the GC's pace from the configuration (gc_percent),
// unless GOGC is set in the environment, which the runtime has applied
// already. It returns the pace in force (-1: off) and where it came from.
//
// jetrelay's live heap is mostly the embedded nats-server's (block caches,
// per-subject state, duplicate ids); Go's default of 100 lets the heap
// grow to twice that before a collection, and a collection of ~40 MB costs
// little next to the 4 KiB load's CPU (DESIGN-NOTES "GC pace 70").
func applyGCPercent(cfg *config.Config) (int, string) {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(cfg.GCPercent)
	}
	return gcPercent()
}

// gcPercent reports the pace in force and its source.
func gcPercent() (int, string) {
	from := "gc_percent"
	if os.Getenv("GOGC") != "" {
		from = "GOGC"
	}
	return gcPercentInForce(), from
}

// gcPercentInForce reads the runtime's GC percent without setting it
// (debug.SetGCPercent reports it only by changing it).
func gcPercentInForce() int {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 100 // not reported by this runtime: Go's default
	}
	return int(int64(s[0].Value.Uint64()))
}

// memoryLimit reports the limit in force (0: none) and its source.
func memoryLimit() (int64, string) {
	from := "memory_limit"
	if os.Getenv("GOMEMLIMIT") != "" {
		from = "GOMEMLIMIT"
	}
	return limitInForce(debug.SetMemoryLimit(-1)), from
}

const noLimit = int64(^uint64(0) >> 1) // math.MaxInt64: the runtime's "no limit"

func limitInForce(v int64) int64 {
	if v == noLimit {
		return 0
	}
	return v
}
