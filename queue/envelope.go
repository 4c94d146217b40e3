package queue

import (
	"crypto/rand"
	"fmt"
	"strings"
	"time"
)

// Recipient is one envelope recipient with its RFC 3461 DSN parameters.
type Recipient struct {
	Addr string `json:"addr"`
	// Notify is the RFC 3461 NOTIFY list ("NEVER" or any of SUCCESS,
	// FAILURE, DELAY); empty means the default (FAILURE, DELAY).
	Notify []string `json:"notify,omitempty"`
	// ORCPT is the original recipient as given ("rfc822;user@example.com").
	ORCPT string `json:"orcpt,omitempty"`
}

// Reply is a remote server's (or jetrelay's own) verdict.
type Reply struct {
	Code int    `json:"code,omitempty"`
	Enh  string `json:"enh,omitempty"`
	Text string `json:"text,omitempty"`
	MX   string `json:"mx,omitempty"`
}

// Envelope is one queue entry: a message and the recipients of one domain.
// It travels as compact JSON in the Jr-Env NATS header; the message bytes
// travel as they are (inline as the entry's payload, or as body chunks).
type Envelope struct {
	ID         string      `json:"id"`               // queue id, shared by all entries of a message
	MsgID      string      `json:"msg_id,omitempty"` // Message-ID header
	From       string      `json:"from"`             // envelope sender; "" = null reverse-path
	Domain     string      `json:"domain"`           // recipient domain of this entry
	Rcpts      []Recipient `json:"rcpts"`
	User       string      `json:"user,omitempty"`
	Arrival    time.Time   `json:"arrival"`
	Attempt    int         `json:"attempt,omitempty"` // attempts made so far
	NextAt     time.Time   `json:"next_at,omitempty"` // when a deferred entry is due
	Ret        string      `json:"ret,omitempty"`     // RFC 3461 RET: FULL | HDRS
	EnvID      string      `json:"envid,omitempty"`   // RFC 3461 ENVID
	RequireTLS bool        `json:"requiretls,omitempty"`
	SMTPUTF8   bool        `json:"smtputf8,omitempty"`
	Body8Bit   bool        `json:"body_8bit,omitempty"` // BODY=8BITMIME (or 8-bit bytes seen)
	Size       int64       `json:"size"`
	Chunks     int         `json:"chunks,omitempty"` // 0 = body inline in this entry
	// IsDSN marks a delivery status notification jetrelay generated itself:
	// it is never bounced again.
	IsDSN bool `json:"is_dsn,omitempty"`
	// DelayNotified records that a delay notice was sent.
	DelayNotified bool  `json:"delay_notified,omitempty"`
	LastReply     Reply `json:"last_reply,omitempty"`
	// Held is set while an operator holds the entry.
	Held bool `json:"held,omitempty"`
	// Probe marks an entry unparked to test its failing destination: its
	// delivery unparks the rest of the domain (park.go).
	Probe bool `json:"probe,omitempty"`
	// Retried is when an operator made the entry due now (queue retry):
	// delivery attempts it even when its destination was marked down
	// before that time (relay/deliver). Cleared when it is deferred again.
	Retried time.Time `json:"retried,omitzero"`
	// Waiting says why a deferred entry waits without an attempt, when
	// traffic shaping made it wait ("shaping: connections (google)",
	// relay/deliver); cleared by its next attempt. queue ls shows it.
	Waiting string `json:"waiting,omitempty"`
	// Meta and Tag are the application's X-Jetrelay-Meta-<key> and
	// X-Jetrelay-Tag values (removed from the message at submission),
	// carried into every event of the message.
	Meta map[string]string `json:"meta,omitempty"`
	Tag  string            `json:"tag,omitempty"`
	// TLSReport marks a TLS-RPT report jetrelay generated (relay/tlsrpt):
	// it is delivered with opportunistic TLS whatever the recipient
	// domain's MTA-STS, DANE or configured policy says (RFC 8460 §3).
	TLSReport bool `json:"tls_report,omitempty"`
}

// UnmarshalEnvelope decodes a Jr-Env header value.
func UnmarshalEnvelope(b []byte) (*Envelope, error) {
	var e Envelope
	if err := decodeEnvelope(b, &e); err != nil {
		return nil, fmt.Errorf("queue: bad envelope: %w", err)
	}
	if e.ID == "" || e.Domain == "" || len(e.Rcpts) == 0 {
		return nil, fmt.Errorf("queue: incomplete envelope (id=%q domain=%q rcpts=%d)", e.ID, e.Domain, len(e.Rcpts))
	}
	return &e, nil
}

// crockford is Crockford's base32 alphabet: ids sort by time and are NATS tokens.
const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// NewID returns a new queue id: 48 bits of milliseconds then 60 random bits,
// 22 characters of Crockford base32, sortable by arrival.
func NewID() string {
	var b [22]byte
	ms := uint64(time.Now().UnixMilli())
	for i := 9; i >= 0; i-- {
		b[i] = crockford[ms&31]
		ms >>= 5
	}
	var r [8]byte
	_, _ = rand.Read(r[:])
	var x uint64
	for _, c := range r {
		x = x<<8 | uint64(c)
	}
	for i := 21; i >= 10; i-- {
		b[i] = crockford[x&31]
		x >>= 5
	}
	return string(b[:])
}

// ValidID reports whether s looks like a queue id (safe as a NATS token).
func ValidID(s string) bool {
	if len(s) != 22 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !strings.ContainsRune(crockford, rune(s[i])) {
			return false
		}
	}
	return true
}
