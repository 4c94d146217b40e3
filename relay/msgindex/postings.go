package msgindex

import (
	"context"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The postings stream: for each search term of a message (recipient,
// recipient domain, sender, sender domain, Message-ID, user, metadata
// pair, a status but delivered) one line {term, queue id}, on the subject
// jr.ix.<kind>.<hash bucket>. A search naming a term reads one subject
// (a server-side filter) instead of every summary, then fetches the
// newest candidates' summaries by key. Subjects are bounded (kinds ×
// postingBuckets, whatever the volume), so nats-server's per-subject
// memory stays fixed; unrelated terms sharing a bucket are told apart by
// the term stored in the record.
const (
	PostingsStream = "JETRELAY_MSGINDEX_TERMS"
	postingPrefix  = "jr.ix"
	postingBuckets = 4096
)

// Term kinds.
const (
	kindRcpt       = "r"
	kindRcptDomain = "rd"
	kindFrom       = "f"
	kindFromDomain = "fd"
	kindMsgID      = "m"
	kindUser       = "u"
	kindMeta       = "k"
	kindStatus     = "s"
)

// postedStatuses are the statuses with postings: all but delivered, the
// common one a scan finds at once (BenchmarkSearch100k/status_deferred
// scanned 620-770 ms for the 2 % still deferred). A posting stays when
// the status changes again; the summary is matched again on every search.
var postedStatuses = map[string]bool{
	StatusQueued: true, StatusDeferred: true, StatusFailed: true, StatusBounced: true, StatusHeld: true,
	StatusDeleted: true, StatusExpired: true, StatusMixed: true,
}

// A posting is a line "<queue id> <kind>:<value>"; a stored message holds
// the lines of one indexer batch for one subject (no JSON to decode, and
// far fewer messages to read than postings).
func postingLine(id string, t term) string { return id + " " + t.String() }

// term is a kind and its normalised value.
type term struct{ kind, value string }

// maxTermLen bounds a term's stored value; longer values share their
// prefix's postings (the summary is matched exactly anyway).
const maxTermLen = 256

// newTerm normalises a term: lower case, at most maxTermLen bytes, no
// line breaks (postings are lines).
func newTerm(kind, v string) term {
	v = strings.ToLower(v)
	if len(v) > maxTermLen {
		v = v[:maxTermLen]
	}
	return term{kind, lineBreaks.Replace(v)}
}

// lineBreaks turns a term's line breaks into spaces (built once: a
// Replacer builds its tables on first use).
var lineBreaks = strings.NewReplacer("\n", " ", "\r", " ")

func (t term) subject() string {
	h := fnv.New32a()
	h.Write([]byte(t.kind + ":" + t.value))
	return fmt.Sprintf("%s.%s.%03x", postingPrefix, t.kind, h.Sum32()%postingBuckets)
}

func (t term) String() string { return t.kind + ":" + t.value }

// PostingsConfig is the postings stream's configuration: limits retention
// like the events stream, kept Retention after the term first appeared.
func PostingsConfig(o Options) jetstream.StreamConfig {
	o = o.withDefaults()
	return jetstream.StreamConfig{
		Name:        PostingsStream,
		Description: "jetrelay message search terms (derived from the events)",
		Subjects:    []string{postingPrefix + ".>"},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      o.Retention,
		MaxBytes:    o.MaxBytes / 2,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
		MaxMsgSize:  maxRecord,
	}
}

// terms are the search terms of a summary.
func terms(s *Summary) map[string]term {
	out := map[string]term{}
	add := func(kind, v string) {
		if v = strings.ToLower(strings.TrimSpace(v)); v != "" {
			t := newTerm(kind, v)
			out[t.String()] = t
		}
	}
	for _, r := range s.Rcpts {
		add(kindRcpt, r.Addr)
		add(kindRcptDomain, domainOf(r.Addr))
	}
	add(kindFrom, s.From)
	add(kindFromDomain, domainOf(s.From))
	add(kindMsgID, strings.Trim(s.MsgID, "<>"))
	add(kindUser, s.User)
	for k, v := range s.Meta {
		add(kindMeta, k+"="+v)
	}
	for _, st := range append([]string{s.Status}, rcptStatuses(s)...) {
		if postedStatuses[st] {
			add(kindStatus, st)
		}
	}
	return out
}

func rcptStatuses(s *Summary) []string {
	out := make([]string, len(s.Rcpts))
	for i, r := range s.Rcpts {
		out[i] = r.Status
	}
	return out
}

func domainOf(addr string) string {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		return addr[i+1:]
	}
	return ""
}

// newTerms are the terms of after that before lacked, in a stable order.
func newTerms(before, after *Summary) []term {
	had := terms(before)
	var out []term
	now := terms(after)
	for _, k := range slices.Sorted(maps.Keys(now)) {
		if _, ok := had[k]; !ok {
			out = append(out, now[k])
		}
	}
	return out
}

// queryTerm picks the most selective term a query names, if any.
func queryTerm(q Query) (term, bool) {
	addr := func(kind, dkind, v string) term {
		if strings.Contains(v[1:], "@") {
			return newTerm(kind, v)
		}
		return newTerm(dkind, strings.TrimPrefix(v, "@"))
	}
	switch {
	case q.MsgID != "":
		return newTerm(kindMsgID, strings.Trim(q.MsgID, "<>")), true
	case q.Rcpt != "" && strings.Contains(q.Rcpt[1:], "@"):
		return addr(kindRcpt, kindRcptDomain, q.Rcpt), true
	case q.From != "" && strings.Contains(q.From[1:], "@"):
		return addr(kindFrom, kindFromDomain, q.From), true
	case len(q.Meta) > 0:
		k := slices.Min(slices.Collect(maps.Keys(q.Meta)))
		return newTerm(kindMeta, k+"="+q.Meta[k]), true
	case q.User != "":
		return newTerm(kindUser, q.User), true
	case q.Rcpt != "":
		return addr(kindRcpt, kindRcptDomain, q.Rcpt), true
	case q.From != "":
		return addr(kindFrom, kindFromDomain, q.From), true
	case postedStatuses[q.Status]:
		return term{kindStatus, q.Status}, true
	}
	return term{}, false
}

// Term search limits: summaries fetched at once, and per Search.
const (
	getChunk = 64  // the first batched get; later ones double up to maxChunk
	maxChunk = 512 // below the server's 1,024 replies per batched get
	maxGets  = 4096
)

// searchTerm answers a query through t's postings, read newest first in
// growing windows of stream time (postingWindows). A posting is stored
// after its message was accepted, so once every posting stored since F is
// read, every candidate accepted since F is known: those are checked,
// newest first, by fetching their summaries getChunk at a time, before an
// older window is read. A later page reads the postings stored since its
// cursor's time again.
func (x *Index) searchTerm(ctx context.Context, q Query, m *matcher, t term, bound string) (Page, error) {
	lo, hi := "", bound
	if !q.Since.IsZero() {
		lo = idFloor(q.Since)
	}
	if u := idFloor(q.Until); !q.Until.IsZero() && (hi == "" || u < hi) {
		hi = u
	}
	ts := &termSearch{x: x, q: q, m: m, want: t.String(), lo: lo, hi: hi, seen: map[string]bool{}}
	now := time.Now()
	end := time.Time{} // the newest window has no end
	for _, w := range postingWindows {
		start := now.Add(-w)
		if hi != "" {
			if t, _ := idTime(hi); t.Add(-w).Before(start) {
				start = t.Add(-w)
			}
		}
		if w == 0 {
			start = time.Time{} // the rest: from the oldest posting kept
		}
		if err := ts.read(ctx, t.subject(), start, end); err != nil {
			return Page{}, err
		}
		frontier := ""
		if !start.IsZero() {
			frontier = idFloor(start.Add(-clockSkew))
		}
		if p, done, err := ts.check(ctx, frontier); done || err != nil {
			return p, err
		}
		if !start.IsZero() && lo != "" && frontier <= lo {
			break // everything at or after Since is known
		}
		end = start
	}
	return ts.check0(ctx)
}

// postingWindows are the look-back of each read (0 = everything else).
var postingWindows = []time.Duration{time.Hour, 6 * time.Hour, 48 * time.Hour, 0}

// clockSkew is how far a posting's stream time may lag its queue id's
// time (another node's clock).
const clockSkew = 5 * time.Minute

// termSearch is one term search's state across windows.
type termSearch struct {
	x       *Index
	q       Query
	m       *matcher
	want    string
	lo, hi  string
	seen    map[string]bool // ids posted for the term
	checked string          // ids at or above this were checked ("" = none)
	items   []Summary
	gets    int
}

// read adds the ids posted for the term between start (zero: the oldest)
// and end (zero: the newest).
func (ts *termSearch) read(ctx context.Context, subject string, start, end time.Time) error {
	cfg := jetstream.ConsumerConfig{
		FilterSubject: subject, DeliverPolicy: jetstream.DeliverAllPolicy, AckPolicy: jetstream.AckNonePolicy,
		MemoryStorage: true, InactiveThreshold: time.Minute, Replicas: 1,
	}
	if !start.IsZero() {
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &start
	}
	js := ts.x.js
	cons, err := js.CreateConsumer(ctx, PostingsStream, cfg)
	if err != nil {
		return fmt.Errorf("msgindex: search: %w", err)
	}
	defer func() { _ = js.DeleteConsumer(context.WithoutCancel(ctx), PostingsStream, cons.CachedInfo().Name) }()
	return readAll(ctx, cons, func(data []byte, at time.Time) bool {
		if !end.IsZero() && !at.Before(end) {
			return false
		}
		for line := range strings.SplitSeq(string(data), "\n") {
			id, tm, ok := strings.Cut(line, " ")
			if ok && tm == ts.want && id >= ts.lo && (ts.hi == "" || id < ts.hi) {
				ts.seen[id] = true
			}
		}
		return true
	})
}

// check fetches and matches the unchecked candidates at or above
// frontier, newest first; done when the page is full or the fetch budget
// is spent.
func (ts *termSearch) check(ctx context.Context, frontier string) (Page, bool, error) {
	var ids []string
	for id := range ts.seen {
		if id >= frontier && (ts.checked == "" || id < ts.checked) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	slices.Reverse(ids)
	for i, n := 0, getChunk; i < len(ids); i, n = i+n, min(2*n, maxChunk) {
		chunk := ids[i:min(i+n, len(ids))]
		sums, err := ts.x.getMany(ctx, chunk)
		if err != nil {
			return Page{}, true, err
		}
		ts.gets += len(chunk)
		for _, s := range sums {
			if s.QueueID == "" || !ts.m.match(&s) {
				continue
			}
			if ts.items = append(ts.items, s); len(ts.items) > ts.q.Limit {
				return Page{Items: ts.items[:ts.q.Limit], Next: cursor(ts.items[ts.q.Limit-1].QueueID)}, true, nil
			}
		}
		ts.checked = chunk[len(chunk)-1]
		if ts.gets >= maxGets && i+len(chunk) < len(ids) {
			return Page{Items: ts.items, Next: cursor(ts.checked)}, true, nil
		}
	}
	if frontier != "" && (ts.checked == "" || frontier < ts.checked) {
		ts.checked = frontier
	}
	return Page{}, false, nil
}

// check0 checks every remaining candidate: the search's last step.
func (ts *termSearch) check0(ctx context.Context) (Page, error) {
	p, done, err := ts.check(ctx, "")
	if done || err != nil {
		return p, err
	}
	return Page{Items: ts.items}, nil
}
