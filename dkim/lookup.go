package dkim

import (
	"context"
	"errors"
	"fmt"
)

// ErrNoRecord is what a TXTResolver returns (wrapped) when the name does
// not exist or has no TXT record.
var ErrNoRecord = errors.New("no TXT record")

// TXTResolver looks TXT records up. `jetrelay dkim check` passes one
// backed by the DNS client delivery uses (relay/dnsclient), so package
// dkim needs no DNS code of its own.
type TXTResolver interface {
	// LookupTXT returns one string per TXT record at name (fully
	// qualified), its character-strings concatenated (RFC 6376 §3.6.2.2),
	// or an error wrapping ErrNoRecord when there is none.
	LookupTXT(ctx context.Context, name string) ([]string, error)
}

// PublishedState is the verdict of CheckPublished.
type PublishedState string

// Verdicts.
const (
	Published   PublishedState = "ok"       // one record, matching the key
	NotFound    PublishedState = "missing"  // no record at the name
	Mismatch    PublishedState = "mismatch" // a record that does not match (or several)
	LookupError PublishedState = "error"    // the key or the lookup failed
)

// PublishedCheck is what CheckPublished found for one key.
type PublishedCheck struct {
	Name   string         `json:"name"` // the record name, without the final dot
	State  PublishedState `json:"state"`
	Detail string         `json:"detail,omitempty"` // why, for mismatch and error
	// Want is the record to publish, as one zone-file line ("" when the
	// key could not be loaded).
	Want string `json:"want,omitempty"`
	// Key describes the key ("rsa-2048", "ed25519") when it loaded.
	Key string `json:"key,omitempty"`
}

// CheckPublished looks spec's key record up through r and compares it with
// the key file: exactly one TXT record (RFC 6376 §3.6.2.2: several give
// undefined results) that MatchRecord accepts.
func CheckPublished(ctx context.Context, r TXTResolver, spec KeySpec) PublishedCheck {
	name := RecordName(spec.Selector, spec.Domain)
	c := PublishedCheck{Name: name[:len(name)-1]}
	key, err := LoadKey(spec.KeyFile)
	if err == nil {
		c.Key = Describe(key)
		c.Want, err = ZoneLine(spec.Selector, spec.Domain, key)
	}
	if err != nil {
		c.State, c.Detail = LookupError, err.Error()
		return c
	}
	txts, err := r.LookupTXT(ctx, name)
	switch {
	case errors.Is(err, ErrNoRecord):
		c.State = NotFound
	case err != nil:
		c.State, c.Detail = LookupError, err.Error()
	case len(txts) > 1:
		c.State, c.Detail = Mismatch, fmt.Sprintf("%d TXT records, want exactly one", len(txts))
	default:
		if err := MatchRecord(txts[0], key); err != nil {
			c.State, c.Detail = Mismatch, err.Error()
		} else {
			c.State = Published
		}
	}
	return c
}
