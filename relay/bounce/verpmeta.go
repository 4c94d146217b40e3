package bounce

import (
	"context"
	"encoding/json"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/events"
)

// Message metadata at the intake (issue 18, point 3).
//
// An asynchronous bounce or a complaint arrives when the message may be
// gone from the queue, with only the VERP token to name it. So that its
// event carries the message's metadata (X-Jetrelay-Meta-<key> and
// X-Jetrelay-Tag, queue.Envelope.Meta/Tag) like every other event of the
// message, minting a token for a message that has any also records it in
// the state bucket under meta.<queue id> (one small record per message,
// written again by each mint: the same bytes; messages without metadata
// cost nothing), kept as long as the VERP records (stateTTL). The
// intake's bounced and complaint events of that queue id take it; a
// record that is missing or unreadable leaves the event without.

// messageMeta is the record under metaKey.
type messageMeta struct {
	Meta map[string]string `json:"meta,omitempty"`
	Tag  string            `json:"tag,omitempty"`
}

func metaKey(qid string) string { return "meta." + qid }

// recordMeta stores env's metadata for the intake (nothing without any).
func (b *Bouncer) recordMeta(ctx context.Context, env *queue.Envelope) error {
	if len(env.Meta) == 0 && env.Tag == "" {
		return nil
	}
	data, err := json.Marshal(messageMeta{Meta: env.Meta, Tag: env.Tag})
	if err != nil {
		return err
	}
	_, err = b.kv.Put(ctx, metaKey(env.ID), data)
	return err
}

// withMeta gives an intake event (bounced, complaint) without metadata
// that of its message, when recorded.
func (b *Bouncer) withMeta(e *events.Event) {
	if (e.Event != events.Bounced && e.Event != events.Complaint) || e.Meta != nil || e.Tag != "" ||
		!queue.ValidID(e.QueueID) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), kvTimeout)
	defer cancel()
	en, err := b.kv.Get(ctx, metaKey(e.QueueID))
	if err != nil {
		return
	}
	var m messageMeta
	if json.Unmarshal(en.Value(), &m) == nil {
		e.Meta, e.Tag = m.Meta, m.Tag
	}
}
