package bounce

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/nats-io/nats.go/jetstream"
)

// SuppressBucket is the JetStream KV bucket of the suppression list.
const SuppressBucket = "jetrelay_suppress"

// Actors recorded on suppression events.
const (
	ActorDelivery = "delivery" // a remote 5.1.0/5.1.1/5.1.6 during delivery (ShouldSuppress)
	ActorIntake   = "intake"   // an asynchronous bounce at the intake listener
)

// Suppression is one suppressed recipient, the KV value (JSON).
type Suppression struct {
	Addr    string    `json:"addr"`
	Since   time.Time `json:"since"`
	Reason  string    `json:"reason,omitempty"`
	Code    string    `json:"code,omitempty"` // enhanced status, e.g. 5.1.1
	QueueID string    `json:"queue_id,omitempty"`
	// User is the submission user whose message led to the suppression
	// (empty for an operator's addition): the suppressed event carries it,
	// so a webhook limited to that user's mail sees it.
	User string `json:"user,omitempty"`
	// Expires is Since + bounces.suppress_for; computed, not stored.
	Expires time.Time `json:"expires,omitzero"`
}

// SuppressionList is the list of recipients that submission refuses
// (RFC 5321 §4.2.2 550 at RCPT). It lives in the JetStream KV bucket
// jetrelay_suppress, shared by every jetrelay process on the same NATS.
//
// Key: the lower-cased address in unpadded base64url, which uses only
// characters KV keys allow. Expiry: the bucket's TTL (stream MaxAge) is
// bounces.suppress_for, so an entry disappears that long after its last
// write; re-suppressing restarts the clock, and a changed suppress_for
// applies to existing entries when the bucket is next opened. Lookups also
// compare Since + suppress_for with the injected clock, so an entry never
// outlives its stated expiry between the server's expiry sweeps.
//
// Lookups are direct gets (the bucket allows them; opening the list turns
// them on for an older bucket), which any current replica answers: a
// lookup does not wait for the stream's leader. The caller bounds its
// time; submission gives it a second and fails open (relay/submit
// policyread.go).
type SuppressionList struct {
	kv     jetstream.KeyValue
	ttl    time.Duration
	events *events.Emitter
	now    func() time.Time
}

// SuppressionOptions configure OpenSuppressionList.
type SuppressionOptions struct {
	JetStream jetstream.JetStream
	Replicas  int
	TTL       time.Duration // bounces.suppress_for; 0 = never expires
	Events    *events.Emitter
	Now       func() time.Time
}

// OpenSuppressionList creates or updates the bucket and returns the list.
func OpenSuppressionList(ctx context.Context, o SuppressionOptions) (*SuppressionList, error) {
	if o.Replicas < 1 {
		o.Replicas = 1
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	kv, err := o.JetStream.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      SuppressBucket,
		Description: "jetrelay suppression list: hard-bounced recipients refused at RCPT",
		History:     1,
		TTL:         o.TTL,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("bounce: suppression bucket %s: %w", SuppressBucket, err)
	}
	return &SuppressionList{kv: kv, ttl: o.TTL, events: o.Events, now: o.Now}, nil
}

// AttachSuppressionList opens the bucket as it is, for tools that must not
// change its TTL (their config may not be the server's); it is created
// with o.TTL only if missing. The list's expiry is the bucket's TTL.
func AttachSuppressionList(ctx context.Context, o SuppressionOptions) (*SuppressionList, error) {
	kv, err := o.JetStream.KeyValue(ctx, SuppressBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return OpenSuppressionList(ctx, o)
	}
	if err != nil {
		return nil, fmt.Errorf("bounce: suppression bucket %s: %w", SuppressBucket, err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("bounce: suppression bucket %s: %w", SuppressBucket, err)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &SuppressionList{kv: kv, ttl: st.TTL(), events: o.Events, now: o.Now}, nil
}

// TTL is how long an entry lasts (bounces.suppress_for; 0 = forever).
func (l *SuppressionList) TTL() time.Duration { return l.ttl }

// NormalizeAddr returns the address as the list keys it: trimmed, without
// angle brackets, lower-cased. (RFC 5321 §2.4 lets local parts be case
// sensitive; no mail system in use relies on it, and a list that a case
// change could bypass would be useless.)
func NormalizeAddr(addr string) string {
	a := strings.TrimSpace(addr)
	a = strings.TrimSuffix(strings.TrimPrefix(a, "<"), ">")
	return strings.ToLower(a)
}

// suppressKey encodes a normalized address as a KV key ([-_A-Za-z0-9]).
func suppressKey(norm string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(norm))
}

// validAddr accepts what can be a mailbox: local@domain without controls.
func validAddr(a string) bool {
	at := strings.LastIndexByte(a, '@')
	if at <= 0 || at == len(a)-1 || len(a) > 320 {
		return false
	}
	return !strings.ContainsFunc(a, func(r rune) bool { return r <= ' ' || r == 0x7f || r == '<' || r == '>' })
}

// Suppressed reports whether addr is suppressed and since when. It matches
// relay/submit's Suppressor interface.
func (l *SuppressionList) Suppressed(ctx context.Context, addr string) (since time.Time, ok bool, err error) {
	norm := NormalizeAddr(addr)
	if !validAddr(norm) {
		return time.Time{}, false, nil
	}
	s, err := l.get(ctx, norm)
	if err != nil || s == nil {
		return time.Time{}, false, err
	}
	if l.ttl > 0 && !l.now().Before(s.Expires) {
		return time.Time{}, false, nil
	}
	return s.Since, true, nil
}

func (l *SuppressionList) get(ctx context.Context, norm string) (*Suppression, error) {
	e, err := l.kv.Get(ctx, suppressKey(norm))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("bounce: suppression lookup: %w", err)
	}
	return l.decode(e.Value())
}

func (l *SuppressionList) decode(b []byte) (*Suppression, error) {
	var s Suppression
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("bounce: bad suppression record: %w", err)
	}
	if l.ttl > 0 {
		s.Expires = s.Since.Add(l.ttl)
	}
	return &s, nil
}

// Add suppresses s.Addr (Since defaults to now) and emits a suppressed
// event naming actor. Adding an address again replaces its record.
func (l *SuppressionList) Add(ctx context.Context, s Suppression, actor string) (Suppression, error) {
	s.Addr = NormalizeAddr(s.Addr)
	if !validAddr(s.Addr) {
		return s, fmt.Errorf("bounce: %q is not an address", s.Addr)
	}
	if s.Since.IsZero() {
		s.Since = l.now().UTC()
	}
	s.Expires = time.Time{}
	b, err := json.Marshal(s)
	if err != nil {
		return s, err
	}
	if _, err := l.kv.Put(ctx, suppressKey(s.Addr), b); err != nil {
		return s, fmt.Errorf("bounce: suppress %s: %w", s.Addr, err)
	}
	if l.ttl > 0 {
		s.Expires = s.Since.Add(l.ttl)
	}
	l.emit(&events.Event{
		Event: events.Suppressed, Rcpt: s.Addr, QueueID: s.QueueID, SMTPEnh: s.Code,
		Reason: s.Reason, Actor: actor, User: s.User,
	})
	return s, nil
}

// Remove lifts the suppression of addr; found is false if it was not listed.
func (l *SuppressionList) Remove(ctx context.Context, addr, actor string) (found bool, err error) {
	norm := NormalizeAddr(addr)
	s, err := l.get(ctx, norm)
	if err != nil || s == nil {
		return false, err
	}
	if err := l.kv.Purge(ctx, suppressKey(norm)); err != nil {
		return false, fmt.Errorf("bounce: unsuppress %s: %w", norm, err)
	}
	l.emit(&events.Event{Event: events.Unsuppressed, Rcpt: norm, QueueID: s.QueueID, Actor: actor})
	return true, nil
}

// List returns every current suppression, oldest first.
func (l *SuppressionList) List(ctx context.Context) ([]Suppression, error) {
	w, err := l.kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("bounce: list suppressions: %w", err)
	}
	defer func() { _ = w.Stop() }()
	var out []Suppression
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case e := <-w.Updates():
			if e == nil { // initial values delivered
				sort.Slice(out, func(i, j int) bool { return out[i].Since.Before(out[j].Since) })
				return out, nil
			}
			s, err := l.decode(e.Value())
			if err != nil {
				continue
			}
			if l.ttl > 0 && !l.now().Before(s.Expires) {
				continue
			}
			out = append(out, *s)
		}
	}
}

func (l *SuppressionList) emit(e *events.Event) {
	if l.events == nil {
		return
	}
	e.Time = l.now().UTC()
	l.events.Emit(e)
}
