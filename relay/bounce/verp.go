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
	"github.com/nats-io/nats.go/jetstream"
)

// VERP (variable envelope return path). With bounces.verp_domain set, the
// envelope sender on the wire for recipient R of message Q is
//
//	b+<token>@<verp_domain>
//	token = lower(Q) ‖ base32(H) ‖ base32(MAC)     (22 + 8 + 16 = 46 characters)
//	H     = SHA-256(lower(R))[:5]
//	MAC   = HMAC-SHA256(key, "jetrelay-verp-1" ‖ 0 ‖ Q ‖ 0 ‖ H)[:10]
//
// in lower-case Crockford base32, so the local part is 48 octets, within
// RFC 5321 §4.5.3.1.1's 64, and survives MTAs that fold case. An 80-bit MAC
// makes forged tokens hopeless; it is checked in constant time.
//
// The token does not carry the address (base32 of an address would break
// the 64-octet limit). VERPSender records R under verp.<Q>.<H> in the
// jetrelay_bounce KV bucket (kept verpRecordTTL), and ParseVERP looks it up.
// If that record is missing, the intake falls back to the addresses the
// bounce itself names, accepting the one whose hash is H.
const (
	verpPrefix    = "b+"
	verpHashLen   = 5
	verpMACLen    = 10
	verpTokenLen  = 22 + 8 + 16
	verpMACDomain = "jetrelay-verp-1"
	// KeyFileName is the HMAC key file under data_dir.
	KeyFileName = "bounce.key"
	keyBytes    = 32
)

var b32 = base32.NewEncoding("0123456789abcdefghjkmnpqrstvwxyz").WithPadding(base32.NoPadding)

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

func (b *Bouncer) verpMAC(qid string, h []byte) []byte {
	m := hmac.New(sha256.New, b.key)
	m.Write([]byte(verpMACDomain))
	m.Write([]byte{0})
	m.Write([]byte(qid))
	m.Write([]byte{0})
	m.Write(h)
	return m.Sum(nil)[:verpMACLen]
}

func verpRecordKey(qid string, h []byte) string {
	return "verp." + qid + "." + b32.EncodeToString(h)
}

// VERPSender returns the envelope sender to use on the wire for rcpt of
// env: b+<token>@<verp_domain> when VERP is on, else env.From. The null
// reverse-path (DSNs) stays null. It records the token's recipient in the
// jetrelay_bounce bucket (idempotent; a failure is logged, and the intake
// then matches the recipient by hash).
func (b *Bouncer) VERPSender(env *queue.Envelope, rcpt string) string {
	if b.verpDomain == "" || env.From == "" || !queue.ValidID(env.ID) {
		return env.From
	}
	h := rcptHash(rcpt)
	token := strings.ToLower(env.ID) + b32.EncodeToString(h) + b32.EncodeToString(b.verpMAC(env.ID, h))
	ctx, cancel := context.WithTimeout(context.Background(), kvTimeout)
	defer cancel()
	_, err := b.kv.Create(ctx, verpRecordKey(env.ID, h), []byte(NormalizeAddr(rcpt)))
	if err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		b.log.Warn().Err(err).Str("queue_id", env.ID).Str("rcpt", rcpt).Msg("VERP record not stored; a bounce will be matched by hash")
	}
	return verpPrefix + token + "@" + b.verpDomain
}

// verifyVERP checks addr's form, domain and MAC without any lookup.
func (b *Bouncer) verifyVERP(addr string) (qid string, h []byte, ok bool) {
	if b.verpDomain == "" {
		return "", nil, false
	}
	addr = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(addr), "<"), ">")
	at := strings.LastIndexByte(addr, '@')
	if at < 0 || !strings.EqualFold(addr[at+1:], b.verpDomain) {
		return "", nil, false
	}
	local := strings.ToLower(addr[:at])
	if !strings.HasPrefix(local, verpPrefix) || len(local) != len(verpPrefix)+verpTokenLen {
		return "", nil, false
	}
	tok := local[len(verpPrefix):]
	qid = strings.ToUpper(tok[:22])
	h, err1 := b32.DecodeString(tok[22:30])
	mac, err2 := b32.DecodeString(tok[30:])
	if !queue.ValidID(qid) || err1 != nil || err2 != nil {
		return "", nil, false
	}
	if !hmac.Equal(mac, b.verpMAC(qid, h)) {
		return "", nil, false
	}
	return qid, h, true
}

// ParseVERP authenticates a VERP address and returns the queue id and
// recipient it stands for. ok is false for anything not minted by
// VERPSender with this key (other domains, malformed or tampered tokens).
// rcpt is "" when the token is genuine but its record is gone (expired).
func (b *Bouncer) ParseVERP(ctx context.Context, addr string) (queueID, rcpt string, ok bool) {
	qid, h, ok := b.verifyVERP(addr)
	if !ok {
		return "", "", false
	}
	e, err := b.kv.Get(ctx, verpRecordKey(qid, h))
	if err != nil {
		return qid, "", true
	}
	return qid, string(e.Value()), true
}

// kvTimeout bounds one KV operation made without a caller's context.
const kvTimeout = 5 * time.Second
