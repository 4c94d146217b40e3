package queue

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Message is what submission hands to Enqueue: the message bytes, stored
// once, and one envelope per recipient domain.
type Message struct {
	ID      string // queue id; NewID() when empty
	Body    []byte
	Entries []*Envelope
}

// Batch headers (JetStream atomic batch publish, nats-server >= 2.12).
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

// Enqueue stores m and returns only once JetStream acknowledged all of it.
// On error nothing of the message is left deliverable.
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
	if len(msgs) == 1 {
		_, err := q.js.PublishMsg(ctx, msgs[0], jetstream.WithExpectStream(StreamName))
		return err
	}
	return q.publishAtomic(ctx, m.ID, msgs)
}

// publishAtomic publishes msgs as one JetStream atomic batch: the server
// stores all of them or none.
func (q *Queue) publishAtomic(ctx context.Context, batchID string, msgs []*nats.Msg) error {
	for i, msg := range msgs {
		msg.Header.Set(hdrBatchID, batchID)
		msg.Header.Set(hdrBatchSeq, strconv.Itoa(i+1))
		if i < len(msgs)-1 {
			if err := q.nc.PublishMsg(msg); err != nil {
				return fmt.Errorf("queue: batch publish: %w", err)
			}
			continue
		}
		msg.Header.Set(hdrBatchCommit, "1")
		_, err := q.js.PublishMsg(ctx, msg, jetstream.WithExpectStream(StreamName))
		if err != nil {
			return fmt.Errorf("queue: batch commit: %w", err)
		}
	}
	return nil
}
