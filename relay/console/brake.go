package console

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The login failure brake: maxFailures failed logins for one user name, or
// from one client address, within failWindow refuse further logins of that
// name or address until the window ends. Counts live in the console bucket
// (keys f.u.<sha256 of name> and f.ip.<sha256 of address>), updated with
// compare-and-set, so every node sees the same counts.
const (
	maxFailures  = 10
	failWindow   = 15 * time.Minute
	casAttempts  = 5
	failUserPfx  = "f.u."
	failAddrPfx  = "f.ip."
	brakeMessage = "too many failed logins; try again later"
)

// failures is one name's or address's failed logins in the current window.
type failures struct {
	Count int       `json:"count"`
	Start time.Time `json:"start"`
}

func failKey(prefix, v string) string {
	h := sha256.Sum256([]byte(v))
	return prefix + hex.EncodeToString(h[:16])
}

// brake counts failed logins in KV.
type brake struct {
	kv  jetstream.KeyValue
	now func() time.Time
}

// blocked reports whether user or addr has too many recent failures. A
// KV error fails closed for this attempt (the caller answers "try again").
func (b *brake) blocked(ctx context.Context, user, addr string) (bool, error) {
	for _, k := range []string{failKey(failUserPfx, user), failKey(failAddrPfx, addr)} {
		f, _, err := b.get(ctx, k)
		if err != nil {
			return true, err
		}
		if f.Count >= maxFailures && b.now().Before(f.Start.Add(failWindow)) {
			return true, nil
		}
	}
	return false, nil
}

// fail records one failed login of user from addr.
func (b *brake) fail(ctx context.Context, user, addr string) error {
	return errors.Join(b.add(ctx, failKey(failUserPfx, user)), b.add(ctx, failKey(failAddrPfx, addr)))
}

// clear forgets user's failures after a successful login (the address's
// count stays: it may be guessing other names).
func (b *brake) clear(ctx context.Context, user string) error {
	err := b.kv.Purge(ctx, failKey(failUserPfx, user))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	return err
}

func (b *brake) get(ctx context.Context, key string) (failures, uint64, error) {
	e, err := b.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return failures{}, 0, nil
	}
	if err != nil {
		return failures{}, 0, err
	}
	var f failures
	_ = json.Unmarshal(e.Value(), &f) // a bad record counts as none
	return f, e.Revision(), nil
}

// add increments key's count, starting a new window when the last one
// ended, with compare-and-set against concurrent logins on other nodes.
func (b *brake) add(ctx context.Context, key string) error {
	var err error
	for range casAttempts {
		var f failures
		var rev uint64
		if f, rev, err = b.get(ctx, key); err != nil {
			return err
		}
		now := b.now().UTC()
		if f.Start.IsZero() || !now.Before(f.Start.Add(failWindow)) {
			f = failures{Start: now}
		}
		f.Count++
		v, _ := json.Marshal(f)
		if rev == 0 {
			_, err = b.kv.Create(ctx, key, v)
		} else {
			_, err = b.kv.Update(ctx, key, v, rev)
		}
		if err == nil {
			return nil
		}
	}
	return err
}
