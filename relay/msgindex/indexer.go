package msgindex

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The indexer: one durable pull consumer on the events stream, shared by
// every node that runs Run (each event goes to one of them).
const (
	Durable    = "msgindex"
	fetchBatch = 1024
	fetchWait  = 5 * time.Second
	// gatherWait lets a batch fill once events flow: a message's accepted
	// and delivery events then mostly fold into one summary write.
	gatherWait    = 300 * time.Millisecond
	ackWait       = time.Minute
	maxAckPending = 4 * fetchBatch
	writers       = 8 // concurrent summary updates within one batch
	casAttempts   = 8
	retryDelay    = 5 * time.Second
	maxRecord     = 64 << 10 // a summary's stored size
	maxPostingMsg = 32 << 10 // lines of postings per stored message
	maxRcpts      = 1000     // recipients kept per summary
	errPause      = time.Second
)

// ConsumerConfig is the indexer's durable consumer on the events stream.
func ConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       Durable,
		Description:   "jetrelay message index (" + Bucket + ")",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxAckPending: maxAckPending,
		FilterSubject: events.SubjPrefix + ".>",
	}
}

// Run keeps the index up to date until ctx ends: it fetches events in
// batches, folds each message's events into its summary and writes each
// changed summary once per batch with a compare-and-set on its revision
// (another node's indexer may have written it meanwhile: then it reads
// and folds again). Events are acknowledged after their summary is
// stored; a failed write leaves them for redelivery. Folding is
// idempotent by events-stream sequence, so redelivered events change
// nothing. Run never touches the mail path: it only reads events.
func (x *Index) Run(ctx context.Context) error {
	cons, err := x.js.CreateOrUpdateConsumer(ctx, events.StreamName, ConsumerConfig())
	if err != nil {
		return fmt.Errorf("msgindex: consumer on %s: %w", events.StreamName, err)
	}
	st, err := x.js.Stream(ctx, events.StreamName)
	if err != nil {
		return fmt.Errorf("msgindex: %s: %w", events.StreamName, err)
	}
	epoch := st.CachedInfo().Created.UnixNano()
	for ctx.Err() == nil {
		msgs, err := next(ctx, cons)
		x.apply(ctx, epoch, msgs)
		if errors.Is(err, nats.ErrConnectionClosed) {
			return err // for good: the relay is closing
		}
		if err != nil && ctx.Err() == nil && gone(ctx, cons) {
			return fmt.Errorf("msgindex: consumer or %s gone (start Run again): %w", events.StreamName, err)
		}
		if err != nil && ctx.Err() == nil {
			x.o.Log.Warn().Err(err).Str("event", "msgindex_fetch_error").Msg("message index: fetch failed")
			pause(ctx, errPause)
		}
	}
	return ctx.Err()
}

// gone reports whether the consumer or its stream was deleted (the
// events stream created again): Run must start over with a new consumer.
func gone(ctx context.Context, cons jetstream.Consumer) bool {
	_, err := cons.Info(ctx)
	return errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound)
}

// next returns the events available now, up to fetchBatch; when there
// are none it waits up to fetchWait for one (a long poll, not a loop).
func next(ctx context.Context, cons jetstream.Consumer) ([]jetstream.Msg, error) {
	msgs, err := collect(cons.FetchNoWait(fetchBatch))
	if err != nil || len(msgs) > 0 {
		return msgs, err
	}
	wait, cancel := context.WithTimeout(ctx, fetchWait)
	defer cancel()
	if msgs, err = collect(cons.Fetch(1, jetstream.FetchContext(wait))); err != nil || len(msgs) == 0 {
		return msgs, err
	}
	more, err := collect(cons.Fetch(fetchBatch-1, jetstream.FetchMaxWait(gatherWait)))
	return append(msgs, more...), err
}

func collect(batch jetstream.MessageBatch, err error) ([]jetstream.Msg, error) {
	if err != nil {
		return nil, err
	}
	var msgs []jetstream.Msg
	for m := range batch.Messages() {
		msgs = append(msgs, m)
	}
	if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) &&
		!errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
		return msgs, err
	}
	return msgs, nil
}

func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// update is one message's events of a batch.
type update struct {
	id    string
	epoch int64 // the events stream's creation: its sequences' numbering
	seqs  []uint64
	evs   []*events.Event
	msgs  []jetstream.Msg
	// fresh: the batch starts with the message's accepted event, so its
	// summary is new — written with a create and no read first; a lost
	// create (a redelivery, another node) takes the reading path.
	fresh bool
	st    stored // the stored summary (read by readAll)
	err   error  // reading it failed
}

// apply folds a batch into the summaries and acknowledges (or leaves for
// redelivery) every message of the batch: the stored summaries of the
// messages not new in it are read in batched gets, the events folded in,
// the batch's new terms posted, then every changed summary written at
// once (asynchronous publishes, each a compare-and-set on the revision it
// was read at); the few whose compare-and-set lost are read and written
// again one by one.
func (x *Index) apply(ctx context.Context, epoch int64, msgs []jetstream.Msg) {
	var order []*update
	byID := map[string]*update{}
	for _, m := range msgs {
		u := x.decode(m)
		if u == nil {
			_ = m.Ack() // not about a message (or unreadable): nothing to index
			continue
		}
		u.epoch = epoch
		if have := byID[u.id]; have != nil {
			have.seqs, have.evs, have.msgs = append(have.seqs, u.seqs...), append(have.evs, u.evs...), append(have.msgs, m)
			continue
		}
		u.fresh = u.evs[0].Event == events.Accepted
		byID[u.id] = u
		order = append(order, u)
	}
	x.readAll(ctx, order)
	preps := make([]*prepared, len(order))
	for i, u := range order {
		preps[i] = prepare(u)
	}
	// Terms first, all of the batch's in one message per subject: a
	// summary is never stored without its postings (a failure here
	// leaves the events for redelivery).
	var ps []posting
	for _, p := range preps {
		if p.err == nil && !p.same {
			for _, t := range p.terms {
				ps = append(ps, posting{p.u.id, t})
			}
		}
	}
	postErr := x.post(ctx, ps)
	var writes []*prepared
	for _, p := range preps {
		switch {
		case p.err != nil || p.same:
		case postErr != nil:
			p.err = postErr
		default:
			writes = append(writes, p)
		}
	}
	x.writeAll(ctx, writes)
	var lost []*prepared
	for _, p := range writes {
		if queue.IsConflict(p.err) {
			lost = append(lost, p) // another node wrote it meanwhile
		}
	}
	parallel(len(lost), func(i int) { lost[i].err = x.store(ctx, lost[i].u) })
	for _, p := range preps {
		x.finish(ctx, p.u, p.err)
	}
}

// parallel runs fn(0..n-1), writers at a time.
func parallel(n int, fn func(i int)) {
	sem := make(chan struct{}, writers)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			fn(i)
		}()
	}
	wg.Wait()
}

// readAll reads the stored summaries of the updates that are not fresh,
// maxChunk keys per batched get.
func (x *Index) readAll(ctx context.Context, us []*update) {
	var todo []*update
	for _, u := range us {
		if !u.fresh {
			todo = append(todo, u)
		}
	}
	for len(todo) > 0 {
		chunk := todo[:min(len(todo), maxChunk)]
		todo = todo[len(chunk):]
		ids := make([]string, len(chunk))
		for i, u := range chunk {
			ids[i] = u.id
		}
		st, err := x.readMany(ctx, ids)
		for i, u := range chunk {
			if err != nil {
				u.err = err
			} else {
				u.st = st[i]
			}
		}
	}
}

// indexedFields are the parts of an events.Event the index reads:
// decoding only these skips the rest (connection, TLS, DKIM, durations)
// without storing them.
const indexedFields = events.FTime | events.FEvent | events.FQueueID | events.FMsgID | events.FUser |
	events.FMailFrom | events.FRcpt | events.FRcpts | events.FRcptCount | events.FSize | events.FMX |
	events.FAttempt | events.FStatus | events.FSMTPCode | events.FSMTPEnh | events.FReply | events.FDSNID |
	events.FArrival | events.FMeta | events.FTag

// decode returns the update of one events-stream message, nil for events
// that belong to no message.
func (x *Index) decode(m jetstream.Msg) *update {
	meta, err := m.Metadata()
	if err != nil {
		return nil
	}
	ev := &events.Event{}
	if err := events.Decode(m.Data(), ev, indexedFields); err != nil {
		x.o.Log.Debug().Err(err).Uint64("seq", meta.Sequence.Stream).Msg("message index: unreadable event skipped")
		return nil
	}
	if _, ok := key(ev.QueueID); !ok {
		return nil
	}
	return &update{id: ev.QueueID, seqs: []uint64{meta.Sequence.Stream}, evs: []*events.Event{ev},
		msgs: []jetstream.Msg{m}}
}

// finish acknowledges u's messages after a stored update, or asks for
// their redelivery later.
func (x *Index) finish(ctx context.Context, u *update, err error) {
	if err != nil {
		if ctx.Err() == nil {
			x.o.Log.Warn().Err(err).Str("event", "msgindex_write_error").Str("queue_id", u.id).
				Msg("message index: summary not stored; its events come again")
		}
		for _, m := range u.msgs {
			_ = m.NakWithDelay(retryDelay)
		}
		return
	}
	for _, m := range u.msgs {
		_ = m.Ack()
	}
}

// prepared is one message's summary with a batch's events folded in.
type prepared struct {
	u     *update
	rev   uint64 // the revision it was read at; 0 = new
	data  []byte
	terms []term // terms the stored summary lacks
	same  bool   // nothing new (redelivered events)
	err   error
}

// prepare folds u's events into its stored summary (u.st: read by readAll
// or store; none for a fresh message).
func prepare(u *update) *prepared {
	if u.err != nil {
		return &prepared{u: u, err: u.err}
	}
	r := u.st.rec
	if r == nil { // none stored (or unreadable: written anew)
		r = &record{Summary: Summary{QueueID: u.id}}
	}
	had := r.Summary
	had.Rcpts = slices.Clone(r.Rcpts)
	r.renumber(u.epoch)
	for i, e := range u.evs {
		r.fold(u.seqs[i], e)
	}
	bound(r)
	p := &prepared{u: u, rev: u.st.rev}
	if p.data, p.err = encodeFit(r); p.err != nil {
		return p
	}
	// Encoding is deterministic: the same bytes mean nothing changed.
	p.same = p.rev != 0 && bytes.Equal(u.st.raw, p.data)
	p.terms = newTerms(&had, &r.Summary)
	return p
}

// writeWait bounds the wait for a batch's stores.
const writeWait = 30 * time.Second

// writeAll stores the prepared summaries, each with compare-and-set on
// the revision it was read at (0: only if none exists), all published at
// once; each one's outcome is in its err.
func (x *Index) writeAll(ctx context.Context, ps []*prepared) {
	futures := make([]jetstream.PubAckFuture, len(ps))
	for i, p := range ps {
		k, _ := key(p.u.id)
		m := nats.NewMsg("$KV." + Bucket + "." + k)
		m.Data = p.data
		futures[i], p.err = x.js.PublishMsgAsync(m, jetstream.WithExpectStream(bucketStream),
			jetstream.WithExpectLastSequencePerSubject(p.rev))
	}
	ctx, cancel := context.WithTimeout(ctx, writeWait)
	defer cancel()
	for i, f := range futures {
		if f != nil {
			ps[i].err = await(ctx, f)
		}
	}
}

// await waits for one asynchronous publish's acknowledgement.
func await(ctx context.Context, f jetstream.PubAckFuture) error {
	select {
	case <-f.Ok():
		return nil
	case err := <-f.Err():
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// store reads u's stored summary again after a lost compare-and-set,
// folds u's events in, posts its own terms and writes it, until it wins.
func (x *Index) store(ctx context.Context, u *update) error {
	var err error
	for range casAttempts {
		u.st, u.err = x.load(ctx, u.id)
		if errors.Is(u.err, ErrNotFound) {
			u.st, u.err = stored{}, nil
		}
		p := prepare(u)
		if p.err != nil || p.same {
			return p.err
		}
		ps := make([]posting, len(p.terms))
		for i, t := range p.terms {
			ps[i] = posting{u.id, t}
		}
		if err = x.post(ctx, ps); err != nil {
			return err
		}
		x.writeAll(ctx, []*prepared{p})
		if err = p.err; !queue.IsConflict(err) {
			return err
		}
	}
	return fmt.Errorf("msgindex: %s changed %d times while being updated: %w", u.id, casAttempts, err)
}

// encode writes r as stored: JSON without HTML escaping, so the search's
// byte pre-filter finds addresses and Message-IDs as they are.
func encode(r *record) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(r); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// bound keeps a record under maxRecord: recipients beyond maxRcpts and
// long replies are cut (the history keeps everything).
func bound(r *record) {
	if len(r.Rcpts) > maxRcpts {
		r.Rcpts, r.RcptSeq, r.Cut = r.Rcpts[:maxRcpts], r.RcptSeq[:min(len(r.RcptSeq), maxRcpts)], true
	}
	for i := range r.Rcpts {
		if len(r.Rcpts[i].Reply) > maxReply {
			r.Rcpts[i].Reply = r.Rcpts[i].Reply[:maxReply]
		}
	}
}

const maxReply = 512

// encodeFit encodes r within maxRecord: replies, then metadata, then
// recipients (halved) are dropped until it fits; the history keeps all.
func encodeFit(r *record) ([]byte, error) {
	for {
		data, err := encode(r)
		if err != nil || len(data) <= maxRecord {
			return data, err
		}
		switch {
		case slices.ContainsFunc(r.Rcpts, func(s RcptState) bool { return s.Reply != "" }):
			for i := range r.Rcpts {
				r.Rcpts[i].Reply = ""
			}
		case len(r.Meta) > 0:
			r.Meta = nil
		case len(r.Rcpts) > 1:
			n := len(r.Rcpts) / 2
			r.Rcpts, r.RcptSeq, r.Cut = r.Rcpts[:n], r.RcptSeq[:min(n, len(r.RcptSeq))], true
		default:
			return nil, fmt.Errorf("msgindex: summary of %s too large (%d bytes)", r.QueueID, len(data))
		}
	}
}

// posting is one term of one message.
type posting struct {
	id string
	t  term
}

// post publishes postings, one message per subject (lines of
// postingLine), and waits for the acks.
func (x *Index) post(ctx context.Context, ps []posting) error {
	type out struct {
		subject string
		data    []byte
	}
	var msgs []*out
	open := map[string]*out{} // the message being filled, per subject
	for _, p := range ps {
		line := postingLine(p.id, p.t)
		o := open[p.t.subject()]
		switch {
		case o == nil || len(o.data)+len(line) >= maxPostingMsg:
			o = &out{subject: p.t.subject(), data: []byte(line)}
			open[o.subject] = o
			msgs = append(msgs, o)
		default:
			o.data = append(append(o.data, '\n'), line...)
		}
	}
	futures := make([]jetstream.PubAckFuture, 0, len(msgs))
	for _, o := range msgs {
		f, err := x.js.PublishAsync(o.subject, o.data, jetstream.WithExpectStream(PostingsStream))
		if err != nil {
			return fmt.Errorf("msgindex: posting: %w", err)
		}
		futures = append(futures, f)
	}
	ctx, cancel := context.WithTimeout(ctx, writeWait)
	defer cancel()
	for _, f := range futures {
		if err := await(ctx, f); err != nil {
			return fmt.Errorf("msgindex: posting: %w", err)
		}
	}
	return nil
}
