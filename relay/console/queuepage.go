package console

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/ops"
	"github.com/nats-io/nats.go/jetstream"
)

// Bounds of the Queue page.
const (
	maxDomainRows  = 100 // domains listed (by entries, most first)
	maxFailingRows = 50  // failing destinations looked up
)

// queueData is the Queue page.
type queueData struct {
	Domains []stateCounts
	Totals  stateCounts
	More    int // domains not listed
	Failing []destination
}

// stateCounts is one row of the counts table.
type stateCounts struct {
	Domain                          string
	Ready, InFlight, Deferred, Held int
}

func countsOf(domain string, m map[queue.State]int) stateCounts {
	return stateCounts{Domain: domain, Ready: m[queue.StateReady], InFlight: m[queue.StateInFlight],
		Deferred: m[queue.StateDeferred], Held: m[queue.StateHeld]}
}

// destination is a domain with deferred entries: the last reply it gave
// and when it is tried next.
type destination struct {
	Domain   string
	Deferred int
	Parked   int
	Reply    queue.Reply
	LastAt   time.Time // when the entry with that reply was deferred or parked
	NextAt   time.Time // the latest deferred entry's next attempt, or the parked domain's wake-up
	NextWhat string    // "retry" or "wake-up (probe)"
}

// queuePage shows entries per domain and state (queue.Counts, as `jetrelay
// queue ls`) and the destinations with deferred entries, most first.
func (c *Console) queuePage(w http.ResponseWriter, r *http.Request, s *session) {
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	counts, err := c.o.Queue.Counts(ctx)
	if err != nil {
		c.fail(w, r, http.StatusServiceUnavailable, "the queue is unavailable: "+err.Error())
		return
	}
	parked, err := c.o.Queue.ParkedDomains(ctx)
	if err != nil {
		c.fail(w, r, http.StatusServiceUnavailable, "the park stream is unavailable: "+err.Error())
		return
	}
	var d queueData
	totals := map[queue.State]int{}
	for _, dc := range counts {
		for st, n := range dc.Counts {
			totals[st] += n
		}
	}
	d.Totals = countsOf("total", totals)
	slices.SortStableFunc(counts, func(a, b queue.DomainCount) int { return total(b) - total(a) })
	if len(counts) > maxDomainRows {
		d.More, counts = len(counts)-maxDomainRows, counts[:maxDomainRows]
	}
	for _, dc := range counts {
		d.Domains = append(d.Domains, countsOf(dc.Domain, dc.Counts))
	}
	d.Failing = c.failing(ctx, counts, parked)
	p := newPage(s, "Queue", "queue", d)
	p.Flash = domainFlash(r.URL.Query())
	c.render(w, http.StatusOK, "queue", p)
}

func total(dc queue.DomainCount) int {
	n := 0
	for _, v := range dc.Counts {
		n += v
	}
	return n
}

// failing looks up the destinations with deferred entries (most first).
func (c *Console) failing(ctx context.Context, counts []queue.DomainCount, parked map[string]int) []destination {
	var out []destination
	for _, dc := range counts {
		if dc.Counts[queue.StateDeferred] > 0 {
			out = append(out, destination{Domain: dc.Domain, Deferred: dc.Counts[queue.StateDeferred],
				Parked: parked[dc.Domain]})
		}
	}
	slices.SortStableFunc(out, func(a, b destination) int { return b.Deferred - a.Deferred })
	out = out[:min(len(out), maxFailingRows)]
	qs, err := c.o.Queue.Stream(ctx)
	if err != nil {
		return out
	}
	ps, perr := c.o.Queue.ParkStream(ctx)
	for i := range out {
		d := &out[i]
		c.lastDeferred(ctx, qs, queue.SubjScheduled+".*."+d.Domain, d)
		if d.Parked > 0 && perr == nil {
			c.lastDeferred(ctx, ps, queue.SubjParked+".*."+d.Domain, d)
			if m, err := qs.GetLastMsgForSubject(ctx, queue.SubjWake+"."+d.Domain); err == nil {
				at, err := time.Parse(time.RFC3339, strings.TrimPrefix(m.Header.Get("Nats-Schedule"), "@at "))
				if err == nil {
					d.NextAt, d.NextWhat = at, "wake-up (probe)"
				}
			}
		}
	}
	return out
}

// lastDeferred reads the newest stored entry on subject (a wildcard over
// one domain's entries) and keeps its reply when it is newer than d's.
func (c *Console) lastDeferred(ctx context.Context, s jetstream.Stream, subject string, d *destination) {
	m, err := s.GetLastMsgForSubject(ctx, subject)
	if err != nil {
		return
	}
	env, err := queue.UnmarshalEnvelope([]byte(m.Header.Get(queue.HeaderEnv)))
	if err != nil || (!d.LastAt.IsZero() && m.Time.Before(d.LastAt)) {
		return
	}
	d.Reply, d.LastAt = env.LastReply, m.Time
	if d.NextWhat == "" && !env.NextAt.IsZero() {
		d.NextAt, d.NextWhat = env.NextAt, "retry"
	}
}

// domainActions are the Queue page's forms for one domain.
var domainActions = map[string]ops.Action{"retry": ops.Retry, "hold": ops.Hold, "release": ops.Release}

// domainAction retries, holds or releases every entry of a domain.
func (c *Console) domainAction(w http.ResponseWriter, r *http.Request, s *session) {
	domain, name := strings.ToLower(r.PathValue("domain")), r.PathValue("action")
	a, ok := domainActions[name]
	if !ok || !queue.ValidDomain(domain) {
		c.fail(w, r, http.StatusNotFound, "no such action")
		return
	}
	rep, err := c.act(r.Context(), s, a, ops.Request{Domain: domain})
	if err != nil && !errors.Is(err, ops.ErrNoMatch) {
		c.fail(w, r, http.StatusConflict, name+" "+domain+": "+err.Error())
		return
	}
	http.Redirect(w, r, "/console/queue?"+reportQuery(name, rep), http.StatusSeeOther)
}

// domainFlash describes a domain action's report.
func domainFlash(q map[string][]string) string {
	if _, ok := domainActions[firstOf(q["done"])]; !ok {
		return ""
	}
	return actionFlash(q)
}

func firstOf(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}
