package stats

import (
	"context"
	"time"
)

const (
	// settledFor is how long a per-node copy of a settled hour's sum is
	// used before it is read again.
	settledFor = time.Minute
	// maxSettled bounds the per-node copies.
	maxSettled = 50000
)

// settled is a copy of one user's sum of one hour.
type settled struct {
	c  Counts
	at time.Time
}

// WindowTotals is Totals for one user from since to now, for a caller
// that asks after every write (the bounce-rate guard): hours that ended
// more than an hour ago change only through late or repeated events, so
// their sums come from a per-node copy read again after a minute; the
// first, partial hour and the last two hours are read each time. A day's
// window costs about 4 reads instead of 25.
func (s *Store) WindowTotals(ctx context.Context, user string, since time.Time) (Counts, error) {
	now := s.o.Now()
	since = since.Truncate(time.Minute)
	first := hourOf(since)
	if !hourStart(first).Equal(since) {
		first++ // the partial first hour is read below
	}
	last := hourOf(now) - 2 // the last settled hour
	if first > last {
		return s.Totals(ctx, Query{User: user, Since: since, Until: now})
	}
	c, err := s.Totals(ctx, Query{User: user, Since: since, Until: hourStart(first)})
	if err != nil {
		return c, err
	}
	tok := userToken(user)
	for h := first; h <= last; h++ {
		hc, err := s.settledHour(ctx, tok, h, now)
		if err != nil {
			return c, err
		}
		c = c.Add(hc)
	}
	rest, err := s.Totals(ctx, Query{User: user, Since: hourStart(last + 1), Until: now})
	return c.Add(rest), err
}

// settledHour is the sum of m.<tok>.<h>, from the copy while it is fresh.
func (s *Store) settledHour(ctx context.Context, tok string, h int64, now time.Time) (Counts, error) {
	key := minuteKey(tok, h)
	s.mu.Lock()
	e, ok := s.settled[key]
	s.mu.Unlock()
	if ok && now.Sub(e.at) < settledFor {
		return e.c, nil
	}
	var r minuteRec
	if err := s.read(ctx, key, &r); err != nil {
		return Counts{}, err
	}
	var c Counts
	for _, v := range r.M {
		c = c.Add(v.counts())
	}
	s.mu.Lock()
	if len(s.settled) >= maxSettled {
		clear(s.settled)
	}
	s.settled[key] = settled{c: c, at: now}
	s.mu.Unlock()
	return c, nil
}
