package stats

import (
	"time"
)

// Bucket is the KV bucket holding the counts.
const Bucket = "jetrelay_stats"

// Counts are recipients by outcome over some time.
type Counts struct {
	Accepted, Delivered, Deferred, Bounced, Complaints, Suppressed int64
	// Bounced = hard bounces: permanent delivery failures + asynchronous bounces at the intake.
}

// BounceRate is Bounced / (Delivered + Bounced), 0 when no volume.
func (c Counts) BounceRate() float64 {
	if c.Delivered+c.Bounced <= 0 {
		return 0
	}
	return float64(c.Bounced) / float64(c.Delivered+c.Bounced)
}

// ComplaintRate is Complaints / Delivered, 0 when nothing was delivered.
func (c Counts) ComplaintRate() float64 {
	if c.Delivered <= 0 {
		return 0
	}
	return float64(c.Complaints) / float64(c.Delivered)
}

// Add returns c + o.
func (c Counts) Add(o Counts) Counts {
	return Counts{
		Accepted: c.Accepted + o.Accepted, Delivered: c.Delivered + o.Delivered, Deferred: c.Deferred + o.Deferred,
		Bounced: c.Bounced + o.Bounced, Complaints: c.Complaints + o.Complaints, Suppressed: c.Suppressed + o.Suppressed,
	}
}

// Zero reports whether every count is 0.
func (c Counts) Zero() bool { return c == Counts{} }

// Query selects counts.
type Query struct {
	User   string    // "" = all users
	Domain string    // recipient domain, "" = all
	Since  time.Time // inclusive
	Until  time.Time // exclusive; zero = now
}

// Row is one user's counts for one recipient domain. Rows gives each user
// a row with Domain "" first: the user's counts over all domains, the only
// row with Accepted (accepted events are per message and name no domain).
type Row struct {
	User, Domain string
	Counts
}

// Point is one step of a Series, starting at Start.
type Point struct {
	Start time.Time
	Counts
}
