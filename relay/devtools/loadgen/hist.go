package loadgen

import (
	"math"
	"math/bits"
	"time"
)

// Histogram layout (HDR-style log-linear): values below 2^subBits ns get one
// bucket each; above, every power of two is split into 2^(subBits-1) equal
// buckets, so a bucket is at most 1/64 (1.6%) wide relative to its values.
// Values at or above 2^maxBits ns (about 18 minutes) land in the last bucket.
const (
	subBits    = 7
	subCount   = 1 << subBits
	halfCount  = subCount / 2
	maxBits    = 40
	numBuckets = subCount + (maxBits-subBits)*halfCount
)

// histogram records latencies in fixed memory; one per worker, merged at the
// end, so recording takes no lock and never allocates.
type histogram struct {
	counts [numBuckets]uint64
	n      uint64
	sum    time.Duration
	max    time.Duration
}

func bucketOf(v uint64) int {
	if v < subCount {
		return int(v)
	}
	if v >= 1<<maxBits {
		return numBuckets - 1
	}
	shift := bits.Len64(v) - subBits // >= 1
	sub := int(v >> uint(shift))     // in [halfCount, subCount)
	return subCount + (shift-1)*halfCount + sub - halfCount
}

// bucketHigh is the largest value that falls in bucket i.
func bucketHigh(i int) uint64 {
	if i < subCount {
		return uint64(i)
	}
	shift := (i-subCount)/halfCount + 1
	sub := uint64((i-subCount)%halfCount + halfCount)
	return (sub+1)<<uint(shift) - 1
}

func (h *histogram) record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.counts[bucketOf(uint64(d))]++
	h.n++
	h.sum += d
	if d > h.max {
		h.max = d
	}
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	if o.max > h.max {
		h.max = o.max
	}
}

// quantile returns the nearest-rank q-quantile (0 < q <= 1), as the upper
// edge of its bucket but never above the exact maximum.
func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = max(rank, 1)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return min(time.Duration(bucketHigh(i)), h.max)
		}
	}
	return h.max
}

func (h *histogram) mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return h.sum / time.Duration(h.n)
}
