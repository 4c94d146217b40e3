package clustertest

import (
	"context"
	"strings"
	"time"
)

// quorumLoss kills two of three nodes: the survivor must answer 4xx (451
// 4.3.0) and never 250, and fail /readyz; when both return, it accepts
// again without a restart of its own.
func (s *Scenario) quorumLoss(ctx context.Context) {
	if len(s.C.Nodes) < 3 {
		return
	}
	survivor, victims := s.C.Nodes[0], s.C.Nodes[1:3]
	pid := survivor.Pid()
	s.load.Pin(survivor)
	for _, v := range victims {
		_ = v.Kill()
		s.rep.Downs++
	}
	lostAt := time.Now()
	s.pausedFrom = lostAt.Add(-10 * time.Second)
	s.logf("quorum lost: kill -9 %s and %s; load only through %s", victims[0].Name, victims[1].Name, survivor.Name)
	s.waitFor(ctx, "/readyz 503 on "+survivor.Name+" without quorum", time.Minute, func() bool {
		return survivor.Ready(ctx) == 503
	})
	s.waitFor(ctx, "5 replies from "+survivor.Name+" without quorum", time.Minute, func() bool {
		return len(s.repliesSince(lostAt, survivor)) >= 5
	})
	returnAt := time.Now()
	s.pausedTo = returnAt.Add(time.Hour) // until the return is measured
	for _, r := range s.repliesSince(lostAt, survivor) {
		if r.Code == 451 && r.Enh == "4.3.0" {
			s.rep.Replies451++
		}
	}
	s.logf("without quorum %s answered %d times, %d of them 451 4.3.0", survivor.Name,
		len(s.repliesSince(lostAt, survivor)), s.rep.Replies451)
	if s.rep.Replies451 == 0 {
		s.problem("no 451 4.3.0 from %s without quorum", survivor.Name)
	}
	for _, v := range victims {
		if err := v.Start(); err != nil {
			s.problem("start %s: %v", v.Name, err)
		}
	}
	s.checkNoAcceptWithoutQuorum(lostAt, returnAt)
	if s.waitFor(ctx, "a 250 from "+survivor.Name+" after quorum returned", 2*time.Minute, func() bool {
		return !s.firstAccept(returnAt, survivor).IsZero()
	}) {
		s.rep.QuorumResume = s.firstAccept(returnAt, survivor).Sub(returnAt)
		s.logf("quorum back: 250s from %s %.1fs after the restart of the other two", survivor.Name, s.rep.QuorumResume.Seconds())
	}
	s.pausedTo = time.Now().Add(10 * time.Second)
	if survivor.Pid() != pid {
		s.problem("%s was restarted during the quorum loss", survivor.Name)
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := s.C.WaitReady(wctx); err != nil {
		s.problem("%v", err)
	}
	s.load.Pin()
}

// repliesSince returns the results through n that began after t and ended
// with an SMTP reply.
func (s *Scenario) repliesSince(t time.Time, n *Node) []Result {
	var out []Result
	for _, r := range s.load.Results() {
		if r.Node == n.Name && r.Start.After(t) && r.Code != 0 {
			out = append(out, r)
		}
	}
	return out
}

// checkNoAcceptWithoutQuorum: a 250 for data sent after quorum was lost
// and answered before the other nodes were started again is a lie.
func (s *Scenario) checkNoAcceptWithoutQuorum(lostAt, returnAt time.Time) {
	for _, r := range s.load.Results() {
		if r.Accepted() && r.DotAt.After(lostAt) && r.End.Before(returnAt) {
			s.problem("250 without quorum: %s via %s (%s)", r.Tag, r.Node, r.Err)
		}
	}
}

// drain waits until every accepted message arrived at the sink.
func (s *Scenario) drain(ctx context.Context) {
	var missing int
	ok := s.waitFor(ctx, "every accepted message delivered", s.DrainTimeout, func() bool {
		missing = 0
		for _, r := range s.load.Results() {
			if r.Accepted() && s.Sink.Count(r.Tag) == 0 {
				missing++
			}
		}
		return missing == 0
	})
	if !ok {
		s.logf("%d accepted messages not delivered", missing)
	}
}

// tally counts replies and deliveries into the report.
func (s *Scenario) tally() {
	got := s.Sink.Snapshot()
	accepted := map[string]bool{}
	var waits []time.Duration
	fivexx := 0
	for _, r := range s.load.Results() {
		s.rep.Sent++
		switch {
		case r.Accepted():
			s.rep.Accepted++
			accepted[r.Tag] = true
		case r.Code == 0:
			s.rep.ConnErrors++
		case r.Code >= 500:
			if fivexx++; fivexx <= 5 {
				s.problem("5xx via %s at %s: %s", r.Node, r.Stage, r.Err)
			}
		default:
			s.rep.Refused++
		}
		if !r.Exempt {
			waits = append(waits, r.MaxWait)
			if r.MaxWait > s.ReplyBound {
				s.problem("%s waited %.1fs for a reply from %s at %s", r.Tag, r.MaxWait.Seconds(), r.Node, r.Stage)
			}
		}
	}
	if fivexx > 0 {
		s.problem("%d 5xx replies in all", fivexx)
	}
	if w := sortedDurations(waits); len(w) > 0 {
		s.rep.MaxReply = w[len(w)-1]
	}
	for tag := range accepted {
		if got[tag] == 0 {
			s.rep.Lost++
		}
	}
	s.deliveryTimes()
	s.countDeliveries(got, accepted)
}

func (s *Scenario) countDeliveries(got map[string]int, accepted map[string]bool) {
	for tag, n := range got {
		if !strings.HasPrefix(tag, s.load.run+"-") {
			continue // not from this load (a DSN, say)
		}
		s.rep.Delivered++
		s.rep.Duplicates += n - 1
		if !accepted[tag] {
			s.rep.UnacceptedDelivered++
		}
	}
	s.rep.DupBound = s.rep.Downs * (leasePrefetch + DeliveryConns)
	if s.rep.Lost > 0 {
		s.problem("%d accepted messages not delivered by the end (lost, or stuck in the queue)", s.rep.Lost)
	}
	if s.rep.Duplicates > s.rep.DupBound {
		s.problem("%d duplicates, over the bound %d", s.rep.Duplicates, s.rep.DupBound)
	}
}

// deliveryTimes: from each 250 to the message's first arrival, except
// around the quorum loss (delivery pauses then by design).
func (s *Scenario) deliveryTimes() {
	late := 0
	for _, r := range s.load.Results() {
		at := s.Sink.FirstArrival(r.Tag)
		if !r.Accepted() || at.IsZero() || (!s.pausedFrom.IsZero() && r.End.After(s.pausedFrom) && r.End.Before(s.pausedTo)) {
			continue
		}
		d := at.Sub(r.End)
		s.rep.MaxDelivery = max(s.rep.MaxDelivery, d)
		if d > DeliveryBound {
			if late++; late <= 5 {
				s.problem("%s (accepted via %s) arrived %.1fs after its 250", r.Tag, r.Node, d.Seconds())
			}
		}
	}
	if late > 0 {
		s.problem("%d messages arrived more than %s after their 250", late, DeliveryBound)
	}
}
