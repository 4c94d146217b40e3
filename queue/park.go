package queue

// Parking: where the entries of a failing destination wait.
//
// A deferred entry normally waits as a message schedule on its own subject
// (jr.s.<id>.<domain>). nats-server keeps an index entry for every subject
// and a timer-table entry for every schedule: about 500 bytes of heap per
// waiting entry, for as long as it waits (measured: 100,000 schedules hold
// 48 MB; the same entries on a few subjects, 2 MB). When a destination has
// stopped accepting mail, its entries are parked instead:
//
//	jr.p.<due>.<domain>   (stream JETRELAY_PARKED, see ParkStreamConfig)
//	                      parked entries of a domain; due (unix seconds,
//	                      rounded up to ParkGrain) is when the entry needs an
//	                      attempt of its own whatever the destination does:
//	                      its retry.max_age expiry, or its delay notice
//	jr.w.<domain>         the domain's wake-up: one message schedule firing
//	                      into jr.q.~wake.<domain>
//
// so a domain holds a few dozen subjects however many entries wait, and one
// schedule. The wake-up is leased through the delivery consumer like an
// entry, so exactly one jetrelay process handles it at a time, and one that
// crashes while handling it leaves it to another after AckWait. Its handler
// (relay/deliver) unparks the entries that are due, plus one more as a probe
// (Envelope.Probe), and schedules the next wake-up; a probe that gets
// delivered asks for a wake-up that unparks everything parked before it.
//
// Unparking publishes the entry to jr.q with Nats-Msg-Id u<seq> (seq in
// the park stream) and then deletes the parked copy by sequence: a crash in between leaves both, and
// whoever unparks it again is deduplicated by the id (the stream's
// duplicate window); never a lost entry.
//
// Invariant: while a domain has parked entries, a wake-up is scheduled or
// leased. Park creates one when none is scheduled, the handler schedules
// the next one before acknowledging its own, and EnsureWakes (run
// periodically by delivery) repairs anything a crash or an operator broke.
//
// Only entries with an inline body are parked: body chunks are reclaimed
// when no sibling entry is found under its queue id, and a parked entry's
// subject does not carry one.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Parking subjects and headers.
const (
	SubjParked = "jr.p"
	SubjWake   = "jr.w"
	// WakeID is the queue-id token of a wake-up message in jr.q.
	WakeID = "~wake"
	// ParkGrain is the granularity of a parked entry's due time.
	ParkGrain     = 10 * time.Minute
	hdrWake       = "Jr-Wake" // "probe" or "all"
	hdrWakeProbes = "Jr-Wake-Probes"
	hdrWakeUpTo   = "Jr-Wake-Up-To"
	hdrMsgID      = "Nats-Msg-Id"
)

// Wake is a parked domain's wake-up, leased like an entry (Entry.Wake).
type Wake struct {
	Domain string
	// All: the destination delivers again; unpark every entry parked with
	// a sequence (of the park stream) up to UpTo (0: whatever is parked
	// when the wake-up is handled).
	All  bool
	UpTo uint64
	// Probes counts the probes in a row that did not get through.
	Probes int
}

// ParkedSubject is the subject of an entry of domain parked until due.
func ParkedSubject(domain string, due time.Time) string {
	return SubjParked + "." + strconv.FormatInt(parkedDue(due).Unix(), 10) + "." + domain
}

// Park stores env (the entry's remaining recipients) on its domain's
// parked subject, due when it needs an attempt of its own, makes sure the
// domain has a wake-up (at wakeAt when none is scheduled), and then
// acknowledges the lease. Only entries with an inline body can be parked.
func (e *Entry) Park(ctx context.Context, env *Envelope, due, wakeAt time.Time) error {
	if e.Env.Chunks > 0 {
		return errors.New("queue: only entries with an inline body are parked")
	}
	env.NextAt = wakeAt.UTC()
	env.Probe, env.Retried = false, time.Time{}
	msg, err := e.q.entryMsg(ParkedSubject(env.Domain, due), env, e.inlineBody())
	if err != nil {
		return err
	}
	if err := persist(ctx, func() error {
		_, err := e.q.js.PublishMsg(ctx, msg, jetstream.WithExpectStream(ParkStreamName))
		return err
	}); err != nil {
		return fmt.Errorf("queue: park %s/%s: %w", env.ID, env.Domain, err)
	}
	if err := e.q.wakeBy(ctx, env.Domain, wakeAt, parkedDue(due)); err != nil {
		// The lease is acknowledged anyway: EnsureWakes repairs it, while a
		// redelivery would park the entry a second time.
		e.q.log.Warn().Err(err).Str("event", "wake_missing").Str("domain", env.Domain).
			Msg("could not schedule the wake-up of a parked domain; the periodic check will")
	}
	if err := e.ack(ctx); err != nil {
		return fmt.Errorf("queue: ack parked %s/%s: %w", env.ID, env.Domain, err)
	}
	return nil
}

// wakeMsg is the schedule of domain's wake-up w at at.
func wakeMsg(w Wake, at time.Time) *nats.Msg {
	msg := &nats.Msg{Subject: SubjWake + "." + w.Domain, Header: nats.Header{}}
	msg.Header.Set("Nats-Schedule", "@at "+at.UTC().Format(time.RFC3339))
	msg.Header.Set("Nats-Schedule-Target", Subject(SubjReady, WakeID, w.Domain))
	mode := "probe"
	if w.All {
		mode = "all"
	}
	msg.Header.Set(hdrWake, mode)
	msg.Header.Set(hdrWakeProbes, strconv.Itoa(w.Probes))
	if w.UpTo > 0 {
		msg.Header.Set(hdrWakeUpTo, strconv.FormatUint(w.UpTo, 10))
	}
	return msg
}

// wakeBy makes sure domain's wake-up comes no later than due: it
// schedules one at at (or due, if earlier) when none is scheduled, and
// brings a scheduled one forward to due.
func (q *Queue) wakeBy(ctx context.Context, domain string, at, due time.Time) error {
	s, err := q.Stream(ctx)
	if err != nil {
		return err
	}
	if due.Before(at) {
		at = due
	}
	m, err := s.GetLastMsgForSubject(ctx, SubjWake+"."+domain)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		_, err := q.EnsureWake(ctx, domain, at)
		return err
	}
	if err != nil {
		return err
	}
	when, err := time.Parse(time.RFC3339, strings.TrimPrefix(m.Header.Get("Nats-Schedule"), "@at "))
	if err == nil && !when.After(due) {
		return nil
	}
	w := wakeFromMsg(domain, m.Header)
	msg := wakeMsg(*w, due)
	msg.Header.Set("Nats-Rollup", "sub")
	_, err = q.publishExpect(ctx, msg, m.Sequence)
	if errors.Is(casErr(err), ErrChanged) {
		return nil // fired or replaced meanwhile: its handler sees the entry
	}
	return err
}

// parkedDue is the time an entry parked until due is unparked: due
// rounded up to ParkGrain (its subject's bucket).
func parkedDue(due time.Time) time.Time {
	g := int64(ParkGrain / time.Second)
	u := due.Unix()
	return time.Unix((u+g-1)/g*g, 0)
}

// EnsureWake schedules a probe wake-up of domain at at unless one is
// scheduled already; created says whether it did.
func (q *Queue) EnsureWake(ctx context.Context, domain string, at time.Time) (created bool, err error) {
	_, err = q.publishExpect(ctx, wakeMsg(Wake{Domain: domain}, at), 0)
	if errors.Is(casErr(err), ErrChanged) {
		return false, nil
	}
	return err == nil, err
}

// ScheduleWake replaces domain's scheduled wake-up (if any) by w at at.
func (q *Queue) ScheduleWake(ctx context.Context, w Wake, at time.Time) error {
	msg := wakeMsg(w, at)
	msg.Header.Set("Nats-Rollup", "sub")
	return persist(ctx, func() error {
		_, err := q.js.PublishMsg(ctx, msg, jetstream.WithExpectStream(StreamName))
		return err
	})
}

// wakeFromMsg reads a fired wake-up.
func wakeFromMsg(domain string, h nats.Header) *Wake {
	w := &Wake{Domain: domain, All: h.Get(hdrWake) == "all"}
	w.Probes, _ = strconv.Atoi(h.Get(hdrWakeProbes))
	w.UpTo, _ = strconv.ParseUint(h.Get(hdrWakeUpTo), 10, 64)
	return w
}

// NakWithDelay hands a leased message back for another try after delay (a
// wake-up whose handling failed). Not to be confused with Queue.Retry, the
// operator's "make a deferred entry due now".
func (e *Entry) NakWithDelay(delay time.Duration) error { return e.msg.NakWithDelay(delay) }

// UnparkResult says what Unpark did.
type UnparkResult struct {
	Moved int // entries moved to jr.q
	Left  int // entries still parked
	// NextDue is the earliest due time of the entries left (zero: none).
	NextDue time.Time
	// More: the extra budget ran out before every entry up to upTo moved.
	More bool
}

var errStop = errors.New("stop")

// UnparkOptions say which of a domain's parked entries Unpark moves. The
// policy (how many, which are probes) is the caller's (relay/deliver's
// parker); Unpark only does the storage operations.
type UnparkOptions struct {
	Domain string
	// Now: every entry due by Now moves.
	Now time.Time
	// Extra: how many entries not yet due move besides, oldest bucket first.
	Extra int
	// UpTo: only entries with a stream sequence up to UpTo count for Extra
	// (0: any).
	UpTo uint64
	// MarkProbe marks the moved entries as probes (Envelope.Probe).
	MarkProbe bool
}

// Unpark moves parked entries to jr.q as o says.
func (q *Queue) Unpark(ctx context.Context, o UnparkOptions) (UnparkResult, error) {
	domain, now, extra, upTo, probe := o.Domain, o.Now, o.Extra, o.UpTo, o.MarkProbe
	var res UnparkResult
	buckets, err := q.parkedBuckets(ctx, domain)
	if err != nil {
		return res, err
	}
	for _, b := range buckets {
		res.Left += b.n
	}
	for _, b := range buckets {
		due := !b.due.After(now)
		if !due && extra <= 0 {
			res.noteDue(b.due)
			res.More = true // perhaps (those above upTo do not count)
			continue
		}
		moved := 0
		err := q.scan(ctx, b.subj, 1, 0, func(m *nats.Msg) error {
			if !due {
				seq, _ := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
				if upTo > 0 && seq > upTo {
					return nil
				}
				if extra <= 0 {
					res.More = true
					return errStop
				}
				extra--
			}
			if err := q.unpark(ctx, m, probe); err != nil {
				return err
			}
			moved++
			return nil
		})
		res.Moved += moved
		res.Left -= moved
		if err != nil && !errors.Is(err, errStop) {
			return res, err
		}
		if moved < b.n && b.due.After(now) {
			res.noteDue(b.due)
		}
	}
	res.Left = max(res.Left, 0)
	return res, nil
}

// noteDue lowers r.NextDue to due if due is earlier (or none is set).
func (r *UnparkResult) noteDue(due time.Time) {
	if r.NextDue.IsZero() || due.Before(r.NextDue) {
		r.NextDue = due
	}
}

// parkBucket is one subject of domain's parked entries: all due at due.
type parkBucket struct {
	subj string
	due  time.Time
	n    int
}

// parkedBuckets lists domain's park buckets, earliest due first.
func (q *Queue) parkedBuckets(ctx context.Context, domain string) ([]parkBucket, error) {
	s, err := q.ParkStream(ctx)
	if err != nil {
		return nil, err
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(SubjParked+".*."+domain))
	if err != nil {
		return nil, err
	}
	var buckets []parkBucket
	for subj, n := range info.State.Subjects {
		_, tok, _, err := ParseSubject(subj)
		u, perr := strconv.ParseInt(tok, 10, 64)
		if err != nil || perr != nil {
			continue
		}
		buckets = append(buckets, parkBucket{subj, time.Unix(u, 0), int(n)})
	}
	slices.SortFunc(buckets, func(a, b parkBucket) int { return a.due.Compare(b.due) })
	return buckets, nil
}

// unpark moves one parked message (a direct-get reply) to jr.q.
func (q *Queue) unpark(ctx context.Context, m *nats.Msg, probe bool) error {
	seq, err := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
	if err != nil {
		return fmt.Errorf("queue: parked message without a sequence: %w", err)
	}
	env, err := UnmarshalEnvelope([]byte(m.Header.Get(HeaderEnv)))
	if err != nil {
		// Not an entry: nothing can deliver it; keep it for an operator.
		q.log.Error().Err(err).Str("event", "bad_entry").Uint64("seq", seq).Msg("unreadable parked entry left in place")
		return nil
	}
	env.Probe, env.NextAt = probe, time.Time{}
	msg, err := q.entryMsg(Subject(SubjReady, env.ID, env.Domain), env, m.Data)
	if err != nil {
		return err
	}
	msg.Header.Set(hdrMsgID, "u"+strconv.FormatUint(seq, 10))
	if err := persist(ctx, func() error {
		_, err := q.js.PublishMsg(ctx, msg, jetstream.WithExpectStream(StreamName))
		return err
	}); err != nil {
		return fmt.Errorf("queue: unpark %s/%s: %w", env.ID, env.Domain, err)
	}
	if err := q.deleteSeq(ctx, SubjParked+".", seq); err != nil && !errors.Is(err, ErrChanged) {
		return fmt.Errorf("queue: unpark %s/%s: remove parked copy: %w", env.ID, env.Domain, err)
	}
	return nil
}

// ParkedLastSeq is the park stream's last sequence.
func (q *Queue) ParkedLastSeq(ctx context.Context) (uint64, error) {
	s, err := q.ParkStream(ctx)
	if err != nil {
		return 0, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.LastSeq, nil
}

// ParkedDomains returns the domains with parked entries and their counts.
func (q *Queue) ParkedDomains(ctx context.Context) (map[string]int, error) {
	s, err := q.ParkStream(ctx)
	var info *jetstream.StreamInfo
	if err == nil {
		info, err = s.Info(ctx, jetstream.WithSubjectFilter(SubjParked+".>"))
	}
	if streamMissing(err) {
		return nil, nil // a NATS set up by a jetrelay without a park stream
	}
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for subj, n := range info.State.Subjects {
		if _, _, d, err := ParseSubject(subj); err == nil {
			out[d] += int(n)
		}
	}
	return out, nil
}

// EnsureWakes gives every domain with parked entries a wake-up at at
// unless it has one scheduled. It returns the domains it scheduled.
func (q *Queue) EnsureWakes(ctx context.Context, at time.Time) ([]string, error) {
	parked, err := q.ParkedDomains(ctx)
	if err != nil {
		return nil, err
	}
	var made, errs = []string(nil), []error(nil)
	s, err := q.Stream(ctx)
	if err != nil {
		return nil, err
	}
	for d := range parked {
		if _, err := s.GetLastMsgForSubject(ctx, Subject(SubjReady, WakeID, d)); err == nil {
			continue // fired, waiting for or in its handler
		}
		created, err := q.EnsureWake(ctx, d, at)
		if created {
			made = append(made, d)
		}
		errs = append(errs, err)
	}
	slices.Sort(made)
	return made, errors.Join(errs...)
}

// streamMissing reports whether err says the stream does not exist.
func streamMissing(err error) bool {
	var api *jetstream.APIError
	return errors.Is(err, jetstream.ErrStreamNotFound) ||
		(errors.As(err, &api) && api.ErrorCode == jetstream.JSErrCodeStreamNotFound)
}

// isWakeSubject reports whether subj is a fired wake-up in jr.q.
func isWakeSubject(subj string) bool {
	return strings.HasPrefix(subj, SubjReady+"."+WakeID+".")
}
