package submit

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// AuthBucket is the JetStream KV bucket of the auth brake, shared by every
// jetrelay process on the same NATS, so a ban holds on every node.
//
// Keys (KV tokens only, [-_=.A-Za-z0-9]); C is the client key (an IPv4
// address or an IPv6 /64, clientKey) in unpadded base64url, U the first 16
// bytes of SHA-256 of the user name as given, in unpadded base64url:
//
//	ip.C      failures from one client for any users; bans the client
//	up.C.U    failures for one user name from one client; bans that pair
//	u.U       failures for one user name from everywhere; only delays
//
// A value is a JSON record (failure count, window start, ban end, and the
// client and user in clear for `auth bans`). Every write carries a
// per-message TTL (Nats-TTL, nats-server 2.11+) that outlives both the
// counting window and the ban, so no limit or eviction ever ends a ban
// early, and stale counters vanish on their own. Counters are updated with
// compare-and-set on the key's revision, so concurrent failures on two
// nodes are never lost.
const AuthBucket = "jetrelay_auth"

const (
	// maxAuthDelay caps the growing per-failure delay.
	maxAuthDelay = 5 * time.Second
	// casAttempts bounds retries of one counter update under contention.
	casAttempts = 16
	// brakeMarkerTTL is how long expiry markers stay in the bucket.
	brakeMarkerTTL = time.Minute
	// maxStoredUser bounds the user name stored in a record.
	maxStoredUser = 256
)

var keyEnc = base64.RawURLEncoding

// clientKey groups addresses the way one client holds them: an IPv4
// address, or the /64 of an IPv6 address (one customer's prefix).
func clientKey(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	a = a.Unmap()
	if a.Is4() {
		return a.String()
	}
	p, _ := a.Prefix(64)
	return p.String()
}

func ipKey(client string) string { return "ip." + keyEnc.EncodeToString([]byte(client)) }
func userKey(user string) string { return "u." + userHash(user) }
func pairKey(client, user string) string {
	return "up." + keyEnc.EncodeToString([]byte(client)) + "." + userHash(user)
}

func userHash(user string) string {
	h := sha256.Sum256([]byte(user))
	return keyEnc.EncodeToString(h[:16])
}

// brakeRecord is one counter's value in the bucket.
type brakeRecord struct {
	Failures int       `json:"n"`
	First    time.Time `json:"first"`
	Until    time.Time `json:"until,omitzero"` // ban end; zero = never banned
	Client   string    `json:"ip,omitempty"`
	User     string    `json:"user,omitempty"`
}

func (r *brakeRecord) bannedAt(now time.Time) bool { return now.Before(r.Until) }

// Ban is one ban in force (for `jetrelay auth bans`).
type Ban struct {
	Client   string    `json:"client"`         // IPv4 address or IPv6 /64
	User     string    `json:"user,omitempty"` // "" = the whole client is banned
	Until    time.Time `json:"until"`
	Failures int       `json:"failures"`
}

// BrakeOptions configure OpenBrake.
type BrakeOptions struct {
	JetStream jetstream.JetStream
	Replicas  int              // nats.replicas
	Now       func() time.Time // default time.Now
}

// Brake is the brute-force brake on AUTH (RFC 4954 §4 leaves the policy
// to the server): failures are counted per client, per (user, client) and
// per user name; the first two ban at their limits, the last only delays,
// so nobody can lock a user out from everywhere. A success clears only its
// own (user, client) counter.
type Brake struct {
	js      jetstream.JetStream
	kv      jetstream.KeyValue
	subject string // "$KV.jetrelay_auth."
	now     func() time.Time
	neg     negCache
	health  brakeHealth // bucket failures (brakelocal.go)
	local   localBrake  // this node's counts while the bucket fails
}

// OpenBrake creates or updates the bucket (per-message TTLs allowed) and
// returns the brake.
func OpenBrake(ctx context.Context, o BrakeOptions) (*Brake, error) {
	if o.JetStream == nil {
		return nil, errors.New("submit: BrakeOptions.JetStream is required")
	}
	if o.Replicas < 1 {
		o.Replicas = 1
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	kv, err := o.JetStream.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:         AuthBucket,
		Description:    "jetrelay auth brake: AUTH failure counters and bans",
		History:        1,
		Storage:        jetstream.FileStorage,
		Replicas:       o.Replicas,
		LimitMarkerTTL: brakeMarkerTTL,
	})
	if err != nil {
		return nil, fmt.Errorf("submit: auth bucket %s (needs nats-server 2.11 or later): %w", AuthBucket, err)
	}
	b := &Brake{js: o.JetStream, kv: kv, subject: "$KV." + AuthBucket + ".", now: o.Now}
	b.neg.init()
	return b, nil
}

// get reads one record; found is false when the key does not exist.
func (b *Brake) get(ctx context.Context, key string) (rec brakeRecord, rev uint64, err error) {
	e, err := b.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return brakeRecord{}, 0, nil
	}
	if err != nil {
		return brakeRecord{}, 0, err
	}
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return brakeRecord{}, e.Revision(), fmt.Errorf("auth brake record %s: %w", key, err)
	}
	return rec, e.Revision(), nil
}

// clientBan returns when the client's ban ends, if it is banned now. A
// recent "not banned" answer may come from the negative cache; a ban never
// does, so an unban takes effect at once.
func (b *Brake) clientBan(ctx context.Context, client string) (time.Time, bool, error) {
	now := b.now()
	if b.neg.fresh(client, now) {
		return time.Time{}, false, nil
	}
	r, _, err := b.get(ctx, ipKey(client))
	if err != nil {
		return time.Time{}, false, err
	}
	if r.bannedAt(now) {
		b.neg.forget(client)
		return r.Until, true, nil
	}
	b.neg.put(client, now)
	return time.Time{}, false, nil
}

// banned reports whether the client, or the user from that client, is
// banned now; it always reads the bucket.
func (b *Brake) banned(ctx context.Context, client, user string) (bool, error) {
	now := b.now()
	for _, key := range []string{ipKey(client), pairKey(client, user)} {
		r, _, err := b.get(ctx, key)
		if err != nil {
			return false, err
		}
		if r.bannedAt(now) {
			return true, nil
		}
	}
	return false, nil
}

// failure is one failed AUTH to record.
type failure struct {
	client, user string
	cfg          config.AuthFailures
}

// failOutcome says what recording a failure did.
type failOutcome struct {
	delay      time.Duration // to wait before answering
	clientBan  bool          // this failure banned the client
	pairBan    bool          // this failure banned the (user, client) pair
	clientFail int           // failures from the client in its window
}

// fail counts one failure in all three counters and returns the delay
// (Delay per failure in the largest count, capped) and the bans it started.
func (b *Brake) fail(ctx context.Context, f failure) (failOutcome, error) {
	user := f.user
	if len(user) > maxStoredUser {
		user = user[:maxStoredUser]
	}
	var out failOutcome
	ip, started, err := b.bump(ctx, ipKey(f.client), brakeRecord{Client: f.client}, f.cfg.Max, f.cfg)
	if err != nil {
		return out, err
	}
	out.clientBan, out.clientFail = started, ip.Failures
	if started {
		b.neg.forget(f.client)
	}
	pair, started, err := b.bump(ctx, pairKey(f.client, f.user), brakeRecord{Client: f.client, User: user},
		f.cfg.MaxPerUser, f.cfg)
	if err != nil {
		return out, err
	}
	out.pairBan = started
	all, _, err := b.bump(ctx, userKey(f.user), brakeRecord{User: user}, 0, f.cfg)
	if err != nil {
		return out, err
	}
	n := max(ip.Failures, pair.Failures, all.Failures)
	out.delay = min(time.Duration(n)*f.cfg.Delay.D(), maxAuthDelay)
	return out, nil
}

// bump adds one failure to key with compare-and-set; limit > 0 bans at
// that many failures in the window. started reports a ban this call began.
func (b *Brake) bump(
	ctx context.Context, key string, fresh brakeRecord, limit int, cfg config.AuthFailures,
) (brakeRecord, bool, error) {
	for range casAttempts {
		now := b.now()
		r, rev, err := b.get(ctx, key)
		if err != nil {
			return r, false, err
		}
		if rev == 0 || !r.bannedAt(now) && now.Sub(r.First) > cfg.Window.D() {
			r = fresh
			r.First = now
		}
		r.Failures++
		started := limit > 0 && r.Failures >= limit && !r.bannedAt(now)
		if started {
			r.Until = now.Add(cfg.Ban.D())
		}
		ttl := recordTTL(r, cfg, now)
		err = b.write(ctx, key, r, rev, ttl)
		if queue.IsConflict(err) {
			continue
		}
		return r, started, err
	}
	return brakeRecord{}, false, fmt.Errorf("auth brake %s: too much contention", key)
}

// recordTTL keeps a record until both its window and its ban are over,
// in whole seconds (the Nats-TTL resolution), at least one.
func recordTTL(r brakeRecord, cfg config.AuthFailures, now time.Time) time.Duration {
	end := r.First.Add(cfg.Window.D())
	if r.Until.After(end) {
		end = r.Until
	}
	return max(end.Sub(now).Truncate(time.Second)+time.Second, time.Second)
}

// write stores r if key is still at revision rev (0: does not exist).
func (b *Brake) write(ctx context.Context, key string, r brakeRecord, rev uint64, ttl time.Duration) error {
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if rev == 0 {
		_, err = b.kv.Create(ctx, key, data, jetstream.KeyTTL(ttl))
		return err
	}
	// kv.Update takes no TTL: publish to the key's subject with the same
	// revision check and a Nats-TTL header.
	m := &nats.Msg{Subject: b.subject + key, Data: data, Header: nats.Header{}}
	_, err = b.js.PublishMsg(ctx, m, jetstream.WithExpectLastSequencePerSubject(rev), jetstream.WithMsgTTL(ttl))
	return err
}

// success clears the (user, client) counter only, unless it is banned (the
// caller checked that it was not; a ban set since then stays). The
// client's and the user's counters keep counting.
func (b *Brake) success(ctx context.Context, client, user string) error {
	key := pairKey(client, user)
	for range casAttempts {
		r, rev, err := b.get(ctx, key)
		if err != nil || rev == 0 || r.bannedAt(b.now()) {
			return err
		}
		err = b.kv.Purge(ctx, key, jetstream.LastRevision(rev), jetstream.PurgeTTL(brakeMarkerTTL))
		if !queue.IsConflict(err) {
			return err
		}
	}
	return fmt.Errorf("auth brake %s: too much contention", key)
}
