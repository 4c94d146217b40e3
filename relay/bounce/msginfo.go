package bounce

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/nats-io/nats.go/jetstream"
)

// What a bounce or complaint event says about its message besides the
// queue id: the submitting user, the Message-ID and the application's
// meta and tag (issue 18: the bounce-rate guard counts per user, webhooks
// carry meta). By the time a bounce arrives the message has usually left
// the queue, so the intake finds them
//
//  1. in the VERP record (verp.<Q>.<H>, JSON since issue 18): written at
//     every minting from the envelope, kept 30 days, one read the intake
//     makes anyway. No write is added on the delivery path.
//  2. else (a record of an earlier version holds only the address) in the
//     message's accepted event on the events stream: an ordered consumer
//     on jr.ev.accepted.<shard> starting a minute before the time the
//     queue id encodes and stopping at the first event stored more than
//     10 minutes after it, so it reads only the accepted events of one
//     shard in that span (about 30 at a million messages a day), within
//     5 seconds. Events are kept events.max_age (default 7 days) and may
//     be dropped under load: the record is the primary source.
//
// Rolling upgrades: a node of an earlier version reading a JSON record
// takes the whole value for the recipient; it never equals a reported
// address, so that node suppresses nothing for it (the rule's token check).

// verpRecord is the value of a VERP record.
type verpRecord struct {
	Rcpt  string            `json:"rcpt"`
	User  string            `json:"user,omitempty"`
	MsgID string            `json:"msg_id,omitempty"`
	Meta  map[string]string `json:"meta,omitempty"`
	Tag   string            `json:"tag,omitempty"`
	// full is set when the record carries the message's info (JSON).
	full bool
}

// encodeRecord is the record for rcpt of env.
func encodeRecord(env *queue.Envelope, rcpt string) []byte {
	b, err := json.Marshal(verpRecord{Rcpt: NormalizeAddr(rcpt), User: env.User, MsgID: env.MsgID,
		Meta: env.Meta, Tag: env.Tag})
	if err != nil { // strings and a map of strings always marshal
		return []byte(NormalizeAddr(rcpt))
	}
	return b
}

// decodeRecord reads a record: JSON, or the bare address earlier versions
// wrote.
func decodeRecord(v []byte) verpRecord {
	if len(v) > 0 && v[0] == '{' {
		var r verpRecord
		if json.Unmarshal(v, &r) == nil && validAddr(r.Rcpt) {
			r.full = true
			return r
		}
		return verpRecord{}
	}
	return verpRecord{Rcpt: string(v)}
}

// stamp copies the message's info into e.
func (r verpRecord) stamp(e *events.Event) {
	e.User, e.MsgID, e.Meta, e.Tag = r.User, r.MsgID, r.Meta, r.Tag
}

// withInfo returns r with the message's info filled in from the accepted
// event when r does not carry it.
func (b *Bouncer) withInfo(ctx context.Context, qid string, r verpRecord) verpRecord {
	if r.full {
		return r
	}
	if info, ok := b.acceptedInfo(ctx, qid); ok {
		info.Rcpt = r.Rcpt
		return info
	}
	return r
}

// Bounds of the accepted-event lookup (see the top of this file).
const (
	infoLookBack  = time.Minute
	infoLookAhead = 10 * time.Minute
	infoTimeout   = 5 * time.Second
	infoBatch     = 100
)

// acceptedInfo finds qid's accepted event; ok is false when it is not
// there (aged out, dropped, no events stream) or the lookup failed.
func (b *Bouncer) acceptedInfo(ctx context.Context, qid string) (rec verpRecord, ok bool) {
	at, ok := idTime(qid)
	if !ok {
		return verpRecord{}, false
	}
	ctx, cancel := context.WithTimeout(ctx, infoTimeout)
	defer cancel()
	start, end := at.Add(-infoLookBack), at.Add(infoLookAhead)
	cons, err := b.q.JetStream().OrderedConsumer(ctx, events.StreamName, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.Subject(&events.Event{Event: events.Accepted, QueueID: qid}),
			events.SubjPrefix + "." + events.Accepted + "." + qid}, // the pre-shard subject form
		DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &start, InactiveThreshold: time.Minute,
	})
	if err != nil {
		return verpRecord{}, false
	}
	for ctx.Err() == nil {
		batch, err := cons.FetchNoWait(infoBatch)
		if err != nil {
			return verpRecord{}, false
		}
		n, pending := 0, uint64(0)
		for msg := range batch.Messages() {
			n++
			meta, err := msg.Metadata()
			if err != nil || meta.Timestamp.After(end) {
				return verpRecord{}, false
			}
			pending = meta.NumPending
			var e events.Event
			if events.Decode(msg.Data(), &e, events.FQueueID|events.FEvent|events.FUser|events.FMsgID|events.FMeta|events.FTag) == nil &&
				e.QueueID == qid && e.Event == events.Accepted {
				return verpRecord{User: e.User, MsgID: e.MsgID, Meta: e.Meta, Tag: e.Tag, full: true}, true
			}
		}
		if n == 0 || pending == 0 {
			break
		}
	}
	return verpRecord{}, false
}

// idTime is the arrival time a queue id encodes: its first 10 Crockford
// base32 characters are milliseconds since the epoch (queue.NewID).
func idTime(id string) (time.Time, bool) {
	if !queue.ValidID(id) {
		return time.Time{}, false
	}
	const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
	var ms int64
	for i := 0; i < 10; i++ {
		ms = ms<<5 | int64(strings.IndexByte(crockford, id[i]))
	}
	return time.UnixMilli(ms), true
}

// maxRecordKeys is how many record keys of one message recordFor lists:
// it only needs to know whether there is exactly one.
const maxRecordKeys = 2

// recordFor finds a VERP record of qid: the one of the first of rcpts that
// has one, else the message's only record. When the message has several
// records and none of rcpts matches, the returned record carries the
// message's info but no recipient. ok is false when qid has no record.
func (b *Bouncer) recordFor(ctx context.Context, qid string, rcpts []string) (verpRecord, bool) {
	for _, a := range rcpts {
		if e, err := b.kv.Get(ctx, verpRecordKey(qid, rcptHash(a))); err == nil {
			return decodeRecord(e.Value()), true
		}
	}
	kl, err := b.kv.ListKeysFiltered(ctx, "verp."+qid+".*")
	if err != nil {
		return verpRecord{}, false
	}
	var keys []string
	for k := range kl.Keys() {
		if keys = append(keys, k); len(keys) >= maxRecordKeys {
			break
		}
	}
	_ = kl.Stop()
	if len(keys) == 0 {
		return verpRecord{}, false
	}
	e, err := b.kv.Get(ctx, keys[0])
	if err != nil {
		return verpRecord{}, false
	}
	r := decodeRecord(e.Value())
	if len(keys) > 1 {
		r.Rcpt = "" // which recipient complained is unknown
	}
	return r, true
}
