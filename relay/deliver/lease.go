package deliver

import (
	"sync"
	"time"

	"github.com/jetrelay/jetrelay/queue"
)

// heartbeatEvery is how old a lease may get before InProgress renews it;
// well within queue.AckWait (2m).
const heartbeatEvery = queue.AckWait / 4

// leases tracks every entry this process holds, from dispatch to its
// final ack, and keeps each lease alive with InProgress heartbeats while it
// waits in a destination queue, is being delivered, or waits to be acked.
type leases struct {
	mu sync.Mutex
	m  map[*queue.Entry]time.Time // last heartbeat
}

func newLeases() *leases { return &leases{m: map[*queue.Entry]time.Time{}} }

func (l *leases) add(en *queue.Entry) {
	l.mu.Lock()
	l.m[en] = time.Now()
	l.mu.Unlock()
}

func (l *leases) remove(en *queue.Entry) {
	l.mu.Lock()
	delete(l.m, en)
	l.mu.Unlock()
}

// beat renews en's lease now if it is older than a few seconds.
func (l *leases) beat(en *queue.Entry) {
	l.mu.Lock()
	last, ok := l.m[en]
	renew := ok && time.Since(last) > 5*time.Second
	if renew {
		l.m[en] = time.Now()
	}
	l.mu.Unlock()
	if renew {
		_ = en.InProgress()
	}
}

// due returns the entries whose last heartbeat is older than heartbeatEvery.
func (l *leases) due(now time.Time) []*queue.Entry {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []*queue.Entry
	for en, last := range l.m {
		if now.Sub(last) >= heartbeatEvery {
			out = append(out, en)
			l.m[en] = now
		}
	}
	return out
}

// Len is the number of entries held.
func (l *leases) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}
