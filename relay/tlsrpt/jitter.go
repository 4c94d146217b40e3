package tlsrpt

import (
	"math/rand/v2"
	"time"
)

// minDelay: reports start at least this long after midnight, when the
// last events of the day have been counted (a flush or two).
const minDelay = 5 * time.Minute

// jitter is how long after midnight a node starts: minDelay plus a random
// share of max, so the nodes of a cluster (and relays everywhere) do not
// all report at 00:00.
func jitter(max time.Duration) time.Duration {
	return minDelay + time.Duration(rand.Int64N(int64(max)))
}
