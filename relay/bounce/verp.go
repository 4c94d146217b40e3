package bounce

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/queue"
)

// VERP (variable envelope return path). With bounces.verp_domain set, the
// envelope sender on the wire for recipient R of message Q, minted at time
// t, is
//
//	b+<token>@<verp_domain>
//	token = lower(Q) ‖ T ‖ base32(H) ‖ base32(MAC)     (22 + 5 + 8 + 16 = 51 characters)
//	T     = hours since 1970-01-01 UTC at t, 5 base32 digits (25 bits)
//	H     = SHA-256(lower(R))[:5]
//	MAC   = HMAC-SHA256(key, "jetrelay-verp-2" ‖ 0 ‖ Q ‖ 0 ‖ T ‖ 0 ‖ H)[:10]
//
// in lower-case Crockford base32, so the local part is 53 octets, within
// RFC 5321 §4.5.3.1.1's 64, and survives MTAs that fold case. An 80-bit MAC
// makes forged tokens hopeless; it is checked in constant time.
//
// Expiry. A token is accepted for bounces.verp_max_age (default 14 days)
// after T. Tokens are minted per delivery attempt, so the age covers what
// happens after the attempt that used it: the receiving system's own queue
// lifetime before it gives up (Postfix and Sendmail default to 5 days,
// Exchange to 2) plus the DSN's own retries towards the intake (up to
// another 5 days), with margin. Later "bounces" (a late "5.7.1 rejected as
// spam", replays of an old token) are refused at RCPT with 550 5.1.1.
// The age is capped at 30 days, the lifetime of the KV record below.
//
// Tokens of the previous format (46 characters, no T, MAC domain
// "jetrelay-verp-1") are accepted only while their KV record exists: those
// records were written when the token was minted and expire 30 days later,
// so old tokens die out by themselves at most 30 days after the upgrade
// without a cut-over date to configure.
//
// The token does not carry the address (base32 of an address would break
// the 64-octet limit). VERPAddress records R under verp.<Q>.<H> in the
// jetrelay_bounce KV bucket (rewritten at every minting, so it outlives
// every token that names it), with the message's user, Message-ID, meta
// and tag for the events of its bounces and complaints (msginfo.go), and
// ParseVERP looks it up. The record is
// the truth about the recipient: without it a bounce is recorded but never
// suppresses (ShouldSuppress).
const (
	verpPrefix     = "b+"
	verpHashLen    = 5
	verpMACLen     = 10
	verpQIDLen     = 22
	verpTimeLen    = 5
	verpTokenLen   = verpQIDLen + verpTimeLen + 8 + 16
	verpLegacyLen  = verpQIDLen + 8 + 16
	verpMACDomain  = "jetrelay-verp-2"
	verpLegacyMAC  = "jetrelay-verp-1"
	verpDefaultAge = 14 * 24 * time.Hour
	// KeyFileName is the HMAC key file under data_dir.
	KeyFileName = "bounce.key"
	keyBytes    = 32
)

const b32Alphabet = "0123456789abcdefghjkmnpqrstvwxyz"

var b32 = base32.NewEncoding(b32Alphabet).WithPadding(base32.NoPadding)

// LoadOrCreateKey returns the VERP HMAC key from dataDir/bounce.key (hex),
// generating it (mode 0600) on first use. Every jetrelay process that may
// receive a bounce needs the same file.
func LoadOrCreateKey(dataDir string) ([]byte, error) {
	path := filepath.Join(dataDir, KeyFileName)
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, err
	}
	raw := make([]byte, keyBytes)
	if _, err := rand.Read(raw); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		_, werr := f.WriteString(hex.EncodeToString(raw) + "\n")
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return nil, fmt.Errorf("bounce: write %s: %w", path, werr)
		}
		return raw, nil
	}
	if !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("bounce: create %s: %w", path, err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("bounce: read %s: %w", path, err)
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(key) < keyBytes {
		return nil, fmt.Errorf("bounce: %s: want %d hex-encoded bytes", path, keyBytes)
	}
	return key, nil
}

// rcptHash is H above.
func rcptHash(addr string) []byte {
	h := sha256.Sum256([]byte(NormalizeAddr(addr)))
	return h[:verpHashLen]
}

// verpMAC is MAC above under key; t is "" for a legacy token (old MAC domain).
func verpMAC(key []byte, qid, t string, h []byte) []byte {
	m := hmac.New(sha256.New, key)
	if t == "" {
		m.Write([]byte(verpLegacyMAC))
	} else {
		m.Write([]byte(verpMACDomain))
	}
	m.Write([]byte{0})
	m.Write([]byte(qid))
	m.Write([]byte{0})
	if t != "" {
		m.Write([]byte(t))
		m.Write([]byte{0})
	}
	m.Write(h)
	return m.Sum(nil)[:verpMACLen]
}

func verpRecordKey(qid string, h []byte) string {
	return "verp." + qid + "." + b32.EncodeToString(h)
}

// encodeHours writes hours since the epoch as verpTimeLen base32 digits.
func encodeHours(t time.Time) string {
	n := uint64(t.Unix()/3600) & (1<<(5*verpTimeLen) - 1)
	var out [verpTimeLen]byte
	for i := verpTimeLen - 1; i >= 0; i-- {
		out[i] = b32Alphabet[n&31]
		n >>= 5
	}
	return string(out[:])
}

// decodeHours is the inverse of encodeHours.
func decodeHours(s string) (time.Time, bool) {
	var n int64
	for i := 0; i < len(s); i++ {
		d := strings.IndexByte(b32Alphabet, s[i])
		if d < 0 {
			return time.Time{}, false
		}
		n = n<<5 | int64(d)
	}
	return time.Unix(n*3600, 0).UTC(), true
}

// VERPAddress returns the envelope sender to use on the wire for rcpt of
// env: b+<token>@<verp_domain> when VERP is on, else env.From. The null
// reverse-path (DSNs) stays null. It first records the token's recipient
// in the jetrelay_bounce bucket; if that fails it returns env.From and the
// error (a bounce to a token without record could never be attributed).
func (b *Bouncer) VERPAddress(ctx context.Context, env *queue.Envelope, rcpt string) (string, error) {
	if b.state().set.VERPDomain == "" || env.From == "" || !queue.ValidID(env.ID) {
		return env.From, nil
	}
	return b.mint(ctx, env, rcpt, b.now())
}

// mint is VERPAddress at time now.
func (b *Bouncer) mint(ctx context.Context, env *queue.Envelope, rcpt string, now time.Time) (string, error) {
	st := b.state()
	if st.key == nil {
		return env.From, nil
	}
	h := rcptHash(rcpt)
	t := encodeHours(now)
	token := strings.ToLower(env.ID) + t + b32.EncodeToString(h) + b32.EncodeToString(verpMAC(st.key, env.ID, t, h))
	if _, err := b.kv.Put(ctx, verpRecordKey(env.ID, h), encodeRecord(env, rcpt)); err != nil {
		return env.From, fmt.Errorf("bounce: VERP record for %s: %w", env.ID, err)
	}
	return verpPrefix + token + "@" + st.set.VERPDomain, nil
}

// verpToken is an authenticated token.
type verpToken struct {
	qid    string
	h      []byte
	issued time.Time // zero for a legacy token
}

func (t verpToken) legacy() bool { return t.issued.IsZero() }

// verifyVERP checks addr's form, domain and MAC without any lookup and
// without looking at its age. The domain is the current VERP domain or a
// retired one that was in force when the token was minted (Prepare).
func (b *Bouncer) verifyVERP(addr string) (verpToken, bool) {
	st := b.state()
	if st.key == nil {
		return verpToken{}, false
	}
	addr = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(addr), "<"), ">")
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return verpToken{}, false
	}
	local := strings.ToLower(addr[:at])
	if !strings.HasPrefix(local, verpPrefix) {
		return verpToken{}, false
	}
	tok := local[len(verpPrefix):]
	var tstr string
	switch len(tok) {
	case verpTokenLen:
		tstr, tok = tok[verpQIDLen:verpQIDLen+verpTimeLen], tok[:verpQIDLen]+tok[verpQIDLen+verpTimeLen:]
	case verpLegacyLen:
	default:
		return verpToken{}, false
	}
	qid := strings.ToUpper(tok[:verpQIDLen])
	h, err1 := b32.DecodeString(tok[verpQIDLen : verpQIDLen+8])
	mac, err2 := b32.DecodeString(tok[verpQIDLen+8:])
	if !queue.ValidID(qid) || err1 != nil || err2 != nil || len(h) != verpHashLen {
		return verpToken{}, false
	}
	if !hmac.Equal(mac, verpMAC(st.key, qid, tstr, h)) {
		return verpToken{}, false
	}
	vt := verpToken{qid: qid, h: h}
	if tstr != "" {
		issued, ok := decodeHours(tstr)
		if !ok {
			return verpToken{}, false
		}
		vt.issued = issued
	}
	return vt, st.domainAccepts(addr[at+1:], vt.issued)
}

// expired reports whether a new-format token is past bounces.verp_max_age
// (or minted more than an hour in the future, which only clock trouble or
// a leaked key could produce).
func (b *Bouncer) expired(t verpToken) bool {
	if t.legacy() {
		return false
	}
	now := b.now()
	return now.After(t.issued.Add(time.Hour).Add(b.state().set.verpMaxAge())) || t.issued.After(now.Add(time.Hour))
}

// ParseVERP authenticates a VERP address and returns the queue id and
// recipient it stands for. ok is false for anything not minted by
// VERPAddress with this key (other domains, malformed or tampered tokens),
// for expired tokens and for legacy tokens whose record is gone. rcpt is
// "" when a current token's record is gone or cannot be read.
func (b *Bouncer) ParseVERP(ctx context.Context, addr string) (queueID, rcpt string, ok bool) {
	qid, rec, ok := b.lookupVERP(ctx, addr)
	return qid, rec.Rcpt, ok
}

// lookupVERP is ParseVERP returning the whole record (recipient and what
// events about the message carry); the record is zero when it is gone.
func (b *Bouncer) lookupVERP(ctx context.Context, addr string) (queueID string, rec verpRecord, ok bool) {
	t, ok := b.verifyVERP(addr)
	if !ok || b.expired(t) {
		return "", verpRecord{}, false
	}
	e, err := b.kv.Get(ctx, verpRecordKey(t.qid, t.h))
	if err != nil {
		if t.legacy() {
			return "", verpRecord{}, false
		}
		return t.qid, verpRecord{}, true
	}
	return t.qid, decodeRecord(e.Value()), true
}

// kvTimeout bounds one KV operation made without a caller's context.
const kvTimeout = 5 * time.Second
