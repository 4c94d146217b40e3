package submit

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"golang.org/x/time/rate"
)

// RateBucket is the JetStream KV bucket of submission.users[].rate, shared
// by every jetrelay process on the same NATS, so a user's rate holds for
// the whole cluster.
//
// Window semantics: time is cut into windows of the rate's period aligned
// to the Unix epoch (a minute for N/m). One key per user and window,
//
//	w.U.P.I   U user hash (as in AuthBucket), P period in seconds, I window index
//
// holds, as a decimal number, the tokens nodes leased in that window. A
// node may lease k more tokens at fraction e of window I only while
//
//	count(I-1)·(1−e) + count(I) + k ≤ N
//
// (the sliding-window estimate: the previous window weighted by how much of
// it a window ending now still covers), written with compare-and-set on the
// key's revision. So the leased tokens of one aligned window never exceed N,
// the estimate of the last period never exceeds N, and a user that keeps
// sending at its limit gets N per period, spread over it, instead of N at
// the start of each window. A leased token is valid only in its window.
// Every write carries a Nats-TTL that ends one second after the following
// window (when the key stops mattering), so old windows vanish on their own.
const RateBucket = "jetrelay_rate"

const (
	// rateKVTimeout bounds the bucket work of one lease; past it the node
	// limits locally (fail open: a slow bucket never refuses mail).
	rateKVTimeout = time.Second
	// rateRetryAfter is how long a node limits locally after the bucket
	// failed, before it asks the bucket again.
	rateRetryAfter = 5 * time.Second
	// rateLogEvery bounds rate_kv_unavailable log lines.
	rateLogEvery = time.Minute
	// rateBlockShare: a lease takes at most N/rateBlockShare tokens …
	rateBlockShare = 20
	// rateShrink: … and at most 1/rateShrink of the room left, so blocks
	// shrink near the end of the budget and little stays unused.
	rateShrink = 4
)

// RateOptions configure OpenRates.
type RateOptions struct {
	// JetStream holds the bucket; nil limits every user per process only
	// (tests that do not care about nodes).
	JetStream jetstream.JetStream
	Replicas  int              // nats.replicas
	Now       func() time.Time // default time.Now; decides windows
	Logger    zerolog.Logger
}

// Rates enforces submission.users[].rate for the cluster. A node leases
// blocks of tokens from the bucket (one compare-and-set write per block)
// and serves messages from its block in memory; most messages touch no
// bucket at all. When the bucket does not answer within rateKVTimeout the
// node limits each user locally at the configured rate (a token bucket of
// N, refilled at N per period), logs event=rate_kv_unavailable at most once
// a minute, and asks the bucket again after rateRetryAfter.
//
// Rates outlives reloads (the Server owns it); a changed rate applies from
// the next lease, a changed period starts a new window.
type Rates struct {
	kv      jetstream.KeyValue // nil: local only
	js      jetstream.JetStream
	subject string // "$KV.jetrelay_rate."
	now     func() time.Time
	log     zerolog.Logger

	mu    sync.Mutex
	users map[string]*userRate

	retryAfter time.Duration // rateRetryAfter; tests shorten it
	downMu     sync.Mutex
	downUntil  time.Time // wall clock: the bucket failed, limit locally
	loggedAt   time.Time
}

// OpenRates creates or updates the bucket (per-message TTLs allowed) and
// returns the cluster-wide limiter.
func OpenRates(ctx context.Context, o RateOptions) (*Rates, error) {
	r := &Rates{now: o.Now, log: o.Logger, users: map[string]*userRate{}, subject: "$KV." + RateBucket + ".",
		retryAfter: rateRetryAfter}
	if r.now == nil {
		r.now = time.Now
	}
	if o.JetStream == nil {
		return r, nil
	}
	kv, err := o.JetStream.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:         RateBucket,
		Description:    "jetrelay submission rates: tokens leased per user and window",
		History:        1,
		Storage:        jetstream.FileStorage,
		Replicas:       max(o.Replicas, 1),
		LimitMarkerTTL: brakeMarkerTTL,
	})
	if err != nil {
		return nil, fmt.Errorf("submit: rate bucket %s (needs nats-server 2.11 or later): %w", RateBucket, err)
	}
	r.js, r.kv = o.JetStream, kv
	return r, nil
}

// userLimit is one user's rate as one policy snapshot configured it.
type userLimit struct {
	r    *Rates
	st   *userRate
	rate config.Rate
}

// Allow takes one token for one message, or reports the rate exceeded.
func (l *userLimit) Allow() bool { return l.r.allow(l.st, l.rate) }

// limiter returns the limit of user at rt; nil when rt is unlimited (or
// has no period, which validation refuses). The user's leased block and
// local limiter are shared by every snapshot.
func (r *Rates) limiter(user string, rt config.Rate) *userLimit {
	if rt.Unlimited() || rt.Per <= 0 {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.users[user]
	if st == nil {
		st = &userRate{hash: userHash(user)}
		r.users[user] = st
	}
	return &userLimit{r: r, st: st, rate: rt}
}

// userRate is this node's state for one user.
type userRate struct {
	mu   sync.Mutex
	hash string
	// block is the lease in hand: tokens left in one window.
	blockWindow int64
	blockPer    time.Duration
	blockLeft   int
	// prev caches the count of the window before blockWindow's.
	prevKey string
	prevN   int
	// last is this node's last write, tried first (no read) at the next
	// lease: it is current unless another node leased since.
	lastKey string
	lastN   int
	lastRev uint64
	// No token can be leased before emptyUntil at emptyRate (a lower
	// bound: counts only grow within a window).
	emptyUntil time.Time
	emptyRate  config.Rate
	// local limits while the bucket is unavailable.
	local     *rate.Limiter
	localRate config.Rate
}

func (r *Rates) allow(u *userRate, rt config.Rate) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	now := r.now()
	w := windowOf(now, rt.Per)
	if u.blockLeft > 0 && u.blockWindow == w && u.blockPer == rt.Per {
		u.blockLeft--
		return true
	}
	if u.emptyRate == rt && now.Before(u.emptyUntil) {
		return false
	}
	if r.kv == nil || r.down() {
		return u.localAllow(rt, now)
	}
	ctx, cancel := context.WithTimeout(context.Background(), rateKVTimeout)
	defer cancel()
	n, err := r.lease(ctx, u, rt, now)
	if err != nil {
		r.markDown(err)
		return u.localAllow(rt, now)
	}
	if n == 0 {
		return false
	}
	u.blockWindow, u.blockPer, u.blockLeft = w, rt.Per, n-1
	return true
}

// lease takes a block of tokens for the window of now, or none (0) when
// the budget is spent; then emptyUntil says when to ask again.
func (r *Rates) lease(ctx context.Context, u *userRate, rt config.Rate, now time.Time) (int, error) {
	w := windowOf(now, rt.Per)
	prev, err := r.prevCount(ctx, u, rt.Per, w)
	if err != nil {
		return 0, err
	}
	start := windowStart(w, rt.Per)
	weighted := float64(prev) * (1 - float64(now.Sub(start))/float64(rt.Per))
	key := windowKey(u.hash, rt.Per, w)
	cur, rev, known := u.lastN, u.lastRev, u.lastKey == key
	for range casAttempts {
		if !known {
			if cur, rev, err = r.count(ctx, key); err != nil {
				return 0, err
			}
		}
		room := int(math.Floor(float64(rt.Count)-weighted)) - cur
		if room < 1 {
			u.emptyUntil, u.emptyRate = refillAt(rt, start, prev, cur), rt
			return 0, nil
		}
		k := min(max(1, rt.Count/rateBlockShare), max(1, room/rateShrink))
		ttl := start.Add(2*rt.Per).Sub(now).Truncate(time.Second) + time.Second
		newRev, err := r.put(ctx, key, cur+k, rev, ttl)
		if queue.IsConflict(err) {
			known = false
			continue
		}
		if err != nil {
			return 0, err
		}
		u.lastKey, u.lastN, u.lastRev = key, cur+k, newRev
		return k, nil
	}
	return 0, fmt.Errorf("rate %s: too much contention", key)
}

// refillAt is when the window's budget has room for one more token: when
// the previous window's weight has fallen far enough, else the window's end.
func refillAt(rt config.Rate, start time.Time, prev, cur int) time.Time {
	end := start.Add(rt.Per)
	free := rt.Count - cur - 1 // room needed beside the previous window's weight
	if free < 0 || prev == 0 {
		return end
	}
	e := 1 - float64(free)/float64(prev)
	if e <= 0 {
		return start
	}
	return start.Add(time.Duration(math.Ceil(e * float64(rt.Per))))
}

// prevCount reads the previous window's count once per window and user.
func (r *Rates) prevCount(ctx context.Context, u *userRate, per time.Duration, w int64) (int, error) {
	key := windowKey(u.hash, per, w-1)
	if u.prevKey == key {
		return u.prevN, nil
	}
	n, _, err := r.count(ctx, key)
	if err != nil {
		return 0, err
	}
	u.prevKey, u.prevN = key, n
	return n, nil
}

// count reads one window's count; a missing key is 0 at revision 0.
func (r *Rates) count(ctx context.Context, key string) (int, uint64, error) {
	e, err := r.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, err
	}
	n, err := strconv.Atoi(string(e.Value()))
	if err != nil || n < 0 {
		return 0, 0, fmt.Errorf("rate %s: bad count %q", key, e.Value())
	}
	return n, e.Revision(), nil
}

// put stores n if key is still at revision rev (0: does not exist) and
// returns the new revision.
func (r *Rates) put(ctx context.Context, key string, n int, rev uint64, ttl time.Duration) (uint64, error) {
	data := []byte(strconv.Itoa(n))
	if rev == 0 {
		return r.kv.Create(ctx, key, data, jetstream.KeyTTL(ttl))
	}
	// kv.Update takes no TTL: publish with the same revision check.
	m := &nats.Msg{Subject: r.subject + key, Data: data, Header: nats.Header{}}
	ack, err := r.js.PublishMsg(ctx, m, jetstream.WithExpectLastSequencePerSubject(rev), jetstream.WithMsgTTL(ttl))
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

// localAllow is the per-node fallback: a token bucket of N refilled at N
// per period, as if this node were alone.
func (u *userRate) localAllow(rt config.Rate, now time.Time) bool {
	if u.local == nil || u.localRate != rt {
		u.local = rate.NewLimiter(rate.Limit(float64(rt.Count)/rt.Per.Seconds()), rt.Count)
		u.localRate = rt
	}
	return u.local.AllowN(now, 1)
}

// down reports whether the bucket failed within rateRetryAfter (wall clock).
func (r *Rates) down() bool {
	r.downMu.Lock()
	defer r.downMu.Unlock()
	return time.Now().Before(r.downUntil)
}

// markDown switches every user to local limits for rateRetryAfter and logs
// it at most once per rateLogEvery.
func (r *Rates) markDown(err error) {
	now := time.Now()
	r.downMu.Lock()
	defer r.downMu.Unlock()
	r.downUntil = now.Add(r.retryAfter)
	if !r.loggedAt.IsZero() && now.Sub(r.loggedAt) < rateLogEvery {
		return
	}
	r.loggedAt = now
	r.log.Warn().Err(err).Str("event", "rate_kv_unavailable").
		Msg("rate bucket unavailable: limiting each user per node until it answers")
}

func windowOf(t time.Time, per time.Duration) int64 { return t.UnixNano() / int64(per) }

func windowStart(w int64, per time.Duration) time.Time { return time.Unix(0, w*int64(per)) }

func windowKey(hash string, per time.Duration, w int64) string {
	return "w." + hash + "." + strconv.FormatInt(int64(per/time.Second), 10) + "." + strconv.FormatInt(w, 10)
}
