package queue

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
)

// Message is what submission hands to Enqueue: the message bytes, stored
// once, and one envelope per recipient domain.
type Message struct {
	ID      string // queue id; NewID() when empty
	Body    []byte
	Entries []*Envelope
}

// Batch headers (JetStream atomic batch publish, nats-server >= 2.12);
// Nats-Msg-Id is hdrMsgID.
const (
	hdrBatchID     = "Nats-Batch-Id"
	hdrBatchSeq    = "Nats-Batch-Sequence"
	hdrBatchCommit = "Nats-Batch-Commit"
)

// ErrInvalidDomain is returned for a recipient domain that cannot be a subject token.
var ErrInvalidDomain = errors.New("queue: invalid recipient domain")

// Subject returns the subject of an entry under prefix (SubjReady,
// SubjScheduled or SubjHeld).
func Subject(prefix, id, domain string) string {
	return prefix + "." + id + "." + domain
}

// ValidDomain reports whether d can be the domain part of an entry subject.
func ValidDomain(d string) bool {
	if d == "" || len(d) > 255 || strings.HasPrefix(d, ".") || strings.HasSuffix(d, ".") || strings.Contains(d, "..") {
		return false
	}
	for _, r := range d {
		if r <= ' ' || r == '*' || r == '>' || r == 0x7f {
			return false
		}
	}
	return true
}

// Enqueue stores m and returns only once JetStream acknowledged all of it,
// retrying a publish that outlives a leader change within the publish
// budget (publish.go). On error nothing of the message is left
// deliverable, except as publish.go says for a lost quorum; an error that
// wraps ErrNotStored means JetStream was unavailable.
//
// Enqueue is idempotent per queue id within the stream's duplicate window
// (DuplicateWindow): every part carries a Nats-Msg-Id derived from m.ID,
// so a message enqueued again under the same ID is reported stored and
// not stored twice. Callers use fresh ids (NewID) for new messages.
func (q *Queue) Enqueue(ctx context.Context, m *Message) error {
	if len(m.Entries) == 0 {
		return errors.New("queue: message without recipients")
	}
	if m.ID == "" {
		m.ID = NewID()
	}
	inline := len(m.Entries) == 1 && len(m.Body) <= q.chunkSize
	var chunks [][]byte
	if !inline {
		for off := 0; off < len(m.Body); off += q.chunkSize {
			chunks = append(chunks, m.Body[off:min(off+q.chunkSize, len(m.Body))])
		}
		if len(chunks) == 0 {
			chunks = [][]byte{nil}
		}
	}
	msgs := make([]*nats.Msg, 0, len(chunks)+len(m.Entries))
	for i, c := range chunks {
		msgs = append(msgs, &nats.Msg{Subject: SubjBody + "." + m.ID + "." + strconv.Itoa(i), Data: c, Header: nats.Header{}})
	}
	for _, e := range m.Entries {
		if !ValidDomain(e.Domain) {
			return fmt.Errorf("%w: %q", ErrInvalidDomain, e.Domain)
		}
		e.ID = m.ID
		e.Size = int64(len(m.Body))
		e.Chunks = len(chunks)
		env, err := e.Marshal()
		if err != nil {
			return err
		}
		msg := &nats.Msg{Subject: Subject(SubjReady, m.ID, e.Domain), Header: nats.Header{}}
		msg.Header.Set(HeaderEnv, string(env))
		if inline {
			msg.Data = m.Body
		}
		msgs = append(msgs, msg)
	}
	for _, msg := range msgs {
		msg.Header.Set(hdrMsgID, msg.Subject) // the subject names the queue id and the part
	}
	return q.publish(ctx, m.ID, msgs)
}
