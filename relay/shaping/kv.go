package shaping

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Bucket is the JetStream KV bucket of the shaping state, shared by every
// node. Keys (P a class, S a scope: "_" for in total or a source, N a
// slot number, R a rule, D a node; each an encoded key part, see kp):
//
//	c.P.S.N  a connection slot: held by the node named in the value, TTL slotTTL, renewed
//	t.P.S.m  the pace of messages: the theoretical arrival time (Unix ns) of the next token
//	t.P.S.c  the same for new connections (connection_rate)
//	s.P      a rule's action (suspension or rate) in force until its end (TTL)
//	b.P      the builtin backoff in force until its end (TTL)
//	r.R.P    the times of a rule's matching replies within its window (TTL)
//	n.D      a node's report: entries waiting and messages sent per provider (TTL)
const Bucket = "jetrelay_shaping"

const (
	// kvTimeout bounds one decision's bucket work; past it the node
	// fails open (limits as if alone) so delivery never stalls on KV.
	kvTimeout = time.Second
	// downFor is how long a node leaves the bucket alone after it failed.
	downFor = 5 * time.Second
	// downLogEvery bounds shaping_kv_unavailable log lines.
	downLogEvery = time.Minute
	// markerTTL is how long the bucket keeps expiry and purge markers.
	markerTTL = time.Minute
	// casAttempts bounds retries of one compare-and-set under contention.
	casAttempts = 8
)

// safePart is a name used as a key part as it is.
var safePart = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)

// kp is s as one KV key token: s itself when safePart, else "=" and its
// unpadded base64url (destinations have dots, which separate tokens).
func kp(s string) string {
	if safePart.MatchString(s) {
		return s
	}
	return "=" + base64.RawURLEncoding.EncodeToString([]byte(s))
}

// unkp reverses kp.
func unkp(p string) (string, bool) {
	if len(p) == 0 || p[0] != '=' {
		return p, p != ""
	}
	b, err := base64.RawURLEncoding.DecodeString(p[1:])
	return string(b), err == nil
}

// openBucket creates or updates the bucket (per-key TTLs allowed).
func openBucket(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:         Bucket,
		Description:    "jetrelay traffic shaping: connection slots, paces, suspensions, node reports",
		History:        1,
		Storage:        jetstream.FileStorage,
		Replicas:       max(replicas, 1),
		LimitMarkerTTL: markerTTL,
	})
	if err != nil {
		return nil, fmt.Errorf("shaping: bucket %s (needs nats-server 2.11 or later): %w", Bucket, err)
	}
	return kv, nil
}

// store writes data to key with a TTL: rev 0 creates it (also over a
// delete marker), else it must still be at revision rev. It returns the
// new revision. kv.Update takes no TTL, so updates publish to the key's
// subject with the revision check, as kv.Create does.
func store(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, key string, data []byte, rev uint64, ttl time.Duration) (uint64, error) {
	ttl = ttlOf(ttl)
	if rev == 0 {
		return kv.Create(ctx, key, data, jetstream.KeyTTL(ttl))
	}
	m := &nats.Msg{Subject: "$KV." + Bucket + "." + key, Data: data, Header: nats.Header{}}
	ack, err := js.PublishMsg(ctx, m, jetstream.WithExpectLastSequencePerSubject(rev), jetstream.WithMsgTTL(ttl))
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

// ttlOf rounds a TTL up to whole seconds, at least one (Nats-TTL's unit).
func ttlOf(d time.Duration) time.Duration {
	if d < time.Second {
		return time.Second
	}
	return (d + time.Second - 1).Truncate(time.Second)
}

// get reads key; a missing or deleted key is nil at revision 0.
func get(ctx context.Context, kv jetstream.KeyValue, key string) ([]byte, uint64, error) {
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	return e.Value(), e.Revision(), nil
}

// health fails the node open while the bucket does not answer: decisions
// are taken as if the node were alone for downFor, logged at most once per
// downLogEvery.
type health struct {
	log      zerolog.Logger
	mu       sync.Mutex
	until    time.Time
	loggedAt time.Time
}

// down reports whether the bucket failed within downFor (wall clock).
func (h *health) down() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return time.Now().Before(h.until)
}

// fail records a bucket failure.
func (h *health) fail(err error) {
	now := time.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.until = now.Add(downFor)
	if !h.loggedAt.IsZero() && now.Sub(h.loggedAt) < downLogEvery {
		return
	}
	h.loggedAt = now
	h.log.Warn().Err(err).Str("event", "shaping_kv_unavailable").
		Msg("shaping bucket unavailable: each node limits as if alone until it answers")
}
