package submit

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"sync"
	"time"
)

// Verified-credential cache. bcrypt costs ~80 ms of CPU per AUTH by design,
// and a client that opens 16 connections at once (a load generator, a web
// application's worker pool) pays it 16 times for the same password: 16% of
// the relay's CPU in a 10-second scripts/bench profile. Like Dovecot's
// auth_cache, a password that bcrypt accepted for a user is remembered for
// credTTL as an HMAC-SHA256 under a random key of this policy snapshot (the
// password itself is never kept), so the same password for the same user
// is accepted again without bcrypt. Only successes are cached: a wrong
// password or an unknown user always costs the full bcrypt work. A reload
// builds new user policies, and with them empty caches.
const (
	credTTL     = 5 * time.Minute
	credPerUser = 16 // distinct remembered passwords per user (rotation overlap)
)

// credCache remembers passwords bcrypt accepted for one user.
type credCache struct {
	key [32]byte
	mu  sync.Mutex
	m   map[[sha256.Size]byte]time.Time // digest -> expiry
}

func newCredCache() *credCache {
	c := &credCache{m: map[[sha256.Size]byte]time.Time{}}
	_, _ = rand.Read(c.key[:])
	return c
}

func (c *credCache) digest(pass string) [sha256.Size]byte {
	h := hmac.New(sha256.New, c.key[:])
	h.Write([]byte(pass))
	var d [sha256.Size]byte
	h.Sum(d[:0])
	return d
}

// ok reports whether pass was accepted within credTTL.
func (c *credCache) ok(pass string, now time.Time) bool {
	d := c.digest(pass)
	c.mu.Lock()
	defer c.mu.Unlock()
	exp, found := c.m[d]
	return found && now.Before(exp)
}

// add remembers pass as accepted.
func (c *credCache) add(pass string, now time.Time) {
	d := c.digest(pass)
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, exp := range c.m {
		if !now.Before(exp) || len(c.m) >= credPerUser {
			delete(c.m, k)
		}
	}
	c.m[d] = now.Add(credTTL)
}
