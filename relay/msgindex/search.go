package msgindex

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/nats-io/nats.go/jetstream"
)

// Query selects summaries; empty fields match everything.
type Query struct {
	// Rcpt and From match an address, or a domain given as "@example.com"
	// or "example.com"; QueueID and MsgID match exactly (MsgID with or
	// without its angle brackets). All ASCII case-insensitive.
	Rcpt, From, QueueID, MsgID string
	// Meta: every key must have this value.
	Meta map[string]string
	// Status is one of Statuses, matching the message's status or any
	// recipient's (a "mixed" message with a failed recipient is found by
	// "failed"); "" = any.
	Status string
	User   string
	// Since and Until bound the acceptance time, Since <= t < Until, t
	// being the time in the queue id (minted on acceptance).
	Since, Until time.Time
	Limit        int    // default 50, max 500
	Cursor       string // from Page.Next; "" = newest
}

// Page is one page of results, newest accepted first.
type Page struct {
	Items []Summary
	// Next continues the search after this page; "" when no more. A page
	// may hold fewer than Limit items and still have a Next when the scan
	// budget ran out first.
	Next string
}

// Search limits.
const (
	DefaultLimit = 50
	MaxLimit     = 500
	// maxScan bounds the summaries one Search reads; a search that finds
	// too few within it returns what it found and a Next to go on.
	maxScan = 250000
	// maxGroup bounds the slots (subject filters) one consumer reads.
	maxGroup    = 48
	scanBatch   = 2000
	cursorMagic = "c1:"
)

// Search returns the summaries matching q, newest accepted first. A
// query naming a queue id is one direct get; one naming a term (address,
// domain, Message-ID, metadata, user, a rare status) reads that term's
// postings and then the newest candidates' summaries; any other (a
// common status, time, none) reads the bucket's slots (slots) backwards
// from q.Until (or now, or the cursor), a growing number per read (1, 1,
// 2, 4 ... 48), and stops once a page is full, q.Since (or the retention)
// is reached, or maxScan summaries were read.
func (x *Index) Search(ctx context.Context, q Query) (Page, error) {
	q, bound, err := normalize(q)
	if err != nil {
		return Page{}, err
	}
	m := newMatcher(q)
	if q.QueueID != "" {
		return x.searchID(ctx, q, m, bound)
	}
	if t, ok := queryTerm(q); ok {
		return x.searchTerm(ctx, q, m, t, bound)
	}
	now := time.Now()
	floor := now.Add(-x.o.Retention)
	if !q.Since.IsZero() && q.Since.After(floor) {
		floor = q.Since
	}
	top := now.Add(clockSkew) // another node's clock may be ahead
	if !q.Until.IsZero() && q.Until.Before(top) {
		top = q.Until
	}
	if bound != "" {
		t, _ := idTime(bound)
		top = minTime(top, t.Add(time.Millisecond))
	}
	return x.scan(ctx, q, m, bound, slots(top, floor))
}

// scan reads slots newest first, a growing number at a time (1, 1, 2, 4
// ... maxGroup), until a page is full or the budget is spent.
func (x *Index) scan(ctx context.Context, q Query, m *matcher, bound string, all []slot) (Page, error) {
	var items []Summary
	scanned, group := 0, 1
	for i := 0; i < len(all); {
		part := all[i:min(i+group, len(all))]
		i += len(part)
		found, n, err := x.scanSlots(ctx, part, m, bound)
		if err != nil {
			return Page{}, err
		}
		items, scanned = append(items, found...), scanned+n
		if len(items) > q.Limit {
			return Page{Items: items[:q.Limit], Next: cursor(items[q.Limit-1].QueueID)}, nil
		}
		if scanned >= maxScan && i < len(all) {
			return Page{Items: items, Next: cursor(idFloor(part[len(part)-1].start))}, nil
		}
		if i > 1 {
			group = min(group*2, maxGroup)
		}
	}
	return Page{Items: items}, nil
}

// A slot is one subject filter of the bucket: a minute of the newest hour
// (a busy hour holds tens of thousands of summaries, and the first page
// should read only the last minutes), or a whole older hour.
type slot struct {
	subject string
	start   time.Time
}

// slots lists the slots from top's minute down to floor's hour, newest
// first.
func slots(top, floor time.Time) []slot {
	var out []slot
	hour := top.Truncate(time.Hour)
	if hour.Before(floor.Truncate(time.Hour)) {
		return nil
	}
	for m := top.Truncate(time.Minute); !m.Before(hour); m = m.Add(-time.Minute) {
		out = append(out, slot{subject: slotPrefix + minuteToken(m) + ".*", start: m})
	}
	for h := hour.Add(-time.Hour); !h.Before(floor.Truncate(time.Hour)); h = h.Add(-time.Hour) {
		out = append(out, slot{subject: slotPrefix + hourToken(h) + ".>", start: h})
	}
	return out
}

const slotPrefix = "$KV." + Bucket + "."

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// normalize checks q and applies the limits; bound is the cursor's
// exclusive upper queue id ("" from the newest).
func normalize(q Query) (Query, string, error) {
	if q.Limit <= 0 {
		q.Limit = DefaultLimit
	}
	q.Limit = min(q.Limit, MaxLimit)
	if q.Status != "" && !slices.Contains(Statuses, q.Status) {
		return q, "", fmt.Errorf("%w: unknown status %q", ErrBadQuery, q.Status)
	}
	q.Rcpt, q.From = strings.TrimSpace(q.Rcpt), strings.TrimSpace(q.From)
	q.QueueID, q.MsgID = strings.ToUpper(strings.TrimSpace(q.QueueID)), strings.TrimSpace(q.MsgID)
	if q.Cursor == "" {
		return q, "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(q.Cursor)
	id, ok := strings.CutPrefix(string(b), cursorMagic)
	if err != nil || !ok || !queue.ValidID(id) {
		return q, "", fmt.Errorf("%w: not a search cursor", ErrBadQuery)
	}
	return q, id, nil
}

// cursor encodes the exclusive upper bound of the next page.
func cursor(id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(cursorMagic + id))
}

// searchID answers a query naming a queue id with one direct get.
func (x *Index) searchID(ctx context.Context, q Query, m *matcher, bound string) (Page, error) {
	s, err := x.load(ctx, q.QueueID)
	if errors.Is(err, ErrNotFound) {
		return Page{}, nil
	}
	if err != nil {
		return Page{}, err
	}
	r := s.rec
	if r == nil || (bound != "" && r.QueueID >= bound) || !m.match(&r.Summary) {
		return Page{}, nil
	}
	return Page{Items: []Summary{r.Summary}}, nil
}

// scanSlots reads every summary of the given slots through one consumer
// and returns the matching ones below bound, newest first, and how many
// it read.
func (x *Index) scanSlots(ctx context.Context, part []slot, m *matcher, bound string) ([]Summary, int, error) {
	subjects := make([]string, len(part))
	for i, s := range part {
		subjects[i] = s.subject
	}
	stream := bucketStream
	cons, err := x.js.CreateConsumer(ctx, stream, jetstream.ConsumerConfig{
		FilterSubjects: subjects, DeliverPolicy: jetstream.DeliverAllPolicy, AckPolicy: jetstream.AckNonePolicy,
		MemoryStorage: true, InactiveThreshold: time.Minute, Replicas: 1,
	})
	if err != nil {
		return nil, 0, fmt.Errorf("msgindex: search: %w", err)
	}
	defer func() { _ = x.js.DeleteConsumer(context.WithoutCancel(ctx), stream, cons.CachedInfo().Name) }()
	// A summary updated during the scan can be read twice (its old value,
	// then the new one at a higher sequence): the later read wins.
	found := map[string]Summary{}
	n := 0
	err = readAll(ctx, cons, func(data []byte, _ time.Time) bool {
		n++
		if !m.candidate(data) {
			if len(found) > 0 {
				delete(found, storedID(data))
			}
			return true
		}
		var r record
		if json.Unmarshal(data, &r) != nil || (bound != "" && r.QueueID >= bound) {
			return true
		}
		if m.match(&r.Summary) {
			found[r.QueueID] = r.Summary
		} else {
			delete(found, r.QueueID)
		}
		return true
	})
	out := slices.SortedFunc(maps.Values(found), func(a, b Summary) int { return cmp.Compare(b.QueueID, a.QueueID) })
	return out, n, err
}

// readAll fetches without waiting until the consumer has nothing pending
// or fn returns false (fn gets each message's data and stream time).
func readAll(ctx context.Context, cons jetstream.Consumer, fn func(data []byte, at time.Time) bool) error {
	if cons.CachedInfo().NumPending == 0 {
		return nil
	}
	for more := true; more; {
		if err := ctx.Err(); err != nil {
			return err
		}
		batch, err := cons.FetchNoWait(scanBatch)
		if err != nil {
			return fmt.Errorf("msgindex: search: %w", err)
		}
		n, pending := 0, uint64(0)
		for msg := range batch.Messages() { // drained even after a stop
			n++
			meta, err := msg.Metadata()
			if err != nil || !more {
				continue
			}
			pending = meta.NumPending
			more = fn(msg.Data(), meta.Timestamp)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return fmt.Errorf("msgindex: search: %w", err)
		}
		if n == 0 || pending == 0 {
			return nil
		}
	}
	return nil
}

// storedID is the queue id of a stored record without decoding it: the
// record's first field (encode writes Summary's fields first).
func storedID(data []byte) string {
	const pre = `{"queue_id":"`
	if len(data) < len(pre)+queueIDLen || string(data[:len(pre)]) != pre {
		return ""
	}
	return string(data[len(pre) : len(pre)+queueIDLen])
}

const queueIDLen = 22
