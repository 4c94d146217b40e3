package msgindex

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The postings stream: for each search term of a message (recipient,
// recipient domain, sender, sender domain, Message-ID, user, metadata
// pair) one small record {term, queue id}, on the subject
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
)

// A posting is stored as "<queue id> <kind>:<value>": no JSON to decode
// when a search reads thousands of them.
func postingData(id string, t term) []byte { return []byte(id + " " + t.String()) }

// term is a kind and its normalised value.
type term struct{ kind, value string }

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
		MaxBytes:    o.MaxBytes / 4,
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
			t := term{kind, v}
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
			return term{kind, strings.ToLower(v)}
		}
		return term{dkind, strings.ToLower(strings.TrimPrefix(v, "@"))}
	}
	switch {
	case q.MsgID != "":
		return term{kindMsgID, strings.ToLower(strings.Trim(q.MsgID, "<>"))}, true
	case q.Rcpt != "" && strings.Contains(q.Rcpt[1:], "@"):
		return addr(kindRcpt, kindRcptDomain, q.Rcpt), true
	case q.From != "" && strings.Contains(q.From[1:], "@"):
		return addr(kindFrom, kindFromDomain, q.From), true
	case len(q.Meta) > 0:
		k := slices.Min(slices.Collect(maps.Keys(q.Meta)))
		return term{kindMeta, strings.ToLower(k + "=" + q.Meta[k])}, true
	case q.User != "":
		return term{kindUser, strings.ToLower(q.User)}, true
	case q.Rcpt != "":
		return addr(kindRcpt, kindRcptDomain, q.Rcpt), true
	case q.From != "":
		return addr(kindFrom, kindFromDomain, q.From), true
	}
	return term{}, false
}

// postingIDs reads t's subject and returns the queue ids posted for t
// within [lo, hi), newest first, without duplicates.
func (x *Index) postingIDs(ctx context.Context, t term, lo, hi string) ([]string, error) {
	cons, err := x.js.CreateConsumer(ctx, PostingsStream, jetstream.ConsumerConfig{
		FilterSubject: t.subject(), DeliverPolicy: jetstream.DeliverAllPolicy, AckPolicy: jetstream.AckNonePolicy,
		MemoryStorage: true, InactiveThreshold: time.Minute, Replicas: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("msgindex: search: %w", err)
	}
	defer func() { _ = x.js.DeleteConsumer(context.WithoutCancel(ctx), PostingsStream, cons.CachedInfo().Name) }()
	want := t.String()
	seen := map[string]bool{}
	err = readAll(ctx, cons, func(data []byte) {
		id, tm, ok := strings.Cut(string(data), " ")
		if !ok || tm != want || id < lo || (hi != "" && id >= hi) {
			return
		}
		seen[id] = true
	})
	ids := slices.Sorted(maps.Keys(seen))
	slices.Reverse(ids)
	return ids, err
}

// Term search limits: summaries fetched at once, and per Search.
const (
	getChunk = 64
	maxGets  = 4096
)

// searchTerm answers a query through t's postings: the candidates newest
// first, their summaries fetched getChunk at a time and matched exactly.
func (x *Index) searchTerm(ctx context.Context, q Query, m *matcher, t term, bound string) (Page, error) {
	lo, hi := "", bound
	if !q.Since.IsZero() {
		lo = idFloor(q.Since)
	}
	if u := idFloor(q.Until); !q.Until.IsZero() && (hi == "" || u < hi) {
		hi = u
	}
	ids, err := x.postingIDs(ctx, t, lo, hi)
	if err != nil {
		return Page{}, err
	}
	var items []Summary
	for i := 0; i < len(ids); i += getChunk {
		chunk := ids[i:min(i+getChunk, len(ids))]
		sums, err := x.getMany(ctx, chunk)
		if err != nil {
			return Page{}, err
		}
		for _, s := range sums {
			if s.QueueID == "" || !m.match(&s) {
				continue
			}
			if items = append(items, s); len(items) > q.Limit {
				return Page{Items: items[:q.Limit], Next: cursor(items[q.Limit-1].QueueID)}, nil
			}
		}
		if i+getChunk >= maxGets && i+getChunk < len(ids) {
			return Page{Items: items, Next: cursor(chunk[len(chunk)-1])}, nil
		}
	}
	return Page{Items: items}, nil
}

// getMany fetches the summaries of ids concurrently, in ids' order; a
// missing one (expired) is a zero Summary.
func (x *Index) getMany(ctx context.Context, ids []string) ([]Summary, error) {
	out := make([]Summary, len(ids))
	errs := make([]error, len(ids))
	sem := make(chan struct{}, writers)
	var wg sync.WaitGroup
	for i, id := range ids {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			r, _, err := x.load(ctx, id)
			if err == nil {
				out[i] = r.Summary
			} else if !errors.Is(err, ErrNotFound) {
				errs[i] = err
			}
		}()
	}
	wg.Wait()
	return out, errors.Join(errs...)
}
