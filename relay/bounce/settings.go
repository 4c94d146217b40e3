package bounce

import (
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/relay/config"
)

// Settings are what the Bouncer reads from the configuration: its own
// section plus the values it needs from elsewhere, named. cmd builds them;
// Prepare swaps them on reload.
type Settings struct {
	config.Bounces
	// Hostname names the reporting MTA in DSNs and greets at the intake.
	Hostname string
	// From is the DSN sender (bounces.from, default MAILER-DAEMON@hostname).
	From string
	// DataDir holds the VERP key (KeyFileName).
	DataDir string
	// MaxAge is delivery.retry.max_age, quoted in failure DSNs.
	MaxAge time.Duration
	// MaxMessageBytes is submission.max_message_bytes: the intake takes
	// bounces up to this plus room for the report (intakeSlack).
	MaxMessageBytes int64
}

// maxRetired bounds the VERP domains a Bouncer remembers from earlier
// configurations.
const maxRetired = 8

// state is one immutable snapshot of the settings in force, with what was
// derived from them. Every call loads it once and sees one configuration.
type state struct {
	set Settings
	key []byte // VERP HMAC key; nil while VERP is off
	// retired are VERP domains of earlier configurations of this process,
	// newest last (see Prepare).
	retired []retiredDomain
}

// retiredDomain is a VERP domain a reload replaced, at the hour it did.
type retiredDomain struct {
	domain string
	at     time.Time
}

// state returns the settings in force.
func (b *Bouncer) state() *state { return b.st.Load() }

// newState builds the state for s; prev (nil at start) gives the key and
// the retired domains to carry over.
func (b *Bouncer) newState(s Settings, prev *state) (*state, error) {
	st := &state{set: s}
	if prev != nil {
		st.key = prev.key
		st.retired = prev.retireDomain(s.VERPDomain, b.now())
	}
	if s.VERPDomain != "" && st.key == nil {
		key, err := LoadOrCreateKey(s.DataDir)
		if err != nil {
			return nil, err
		}
		st.key = key
	}
	return st, nil
}

// retireDomain returns the retired list after a reload to next: the
// current domain joins it if it changes, next leaves it, and domains whose
// every token has expired are dropped.
func (st *state) retireDomain(next string, now time.Time) []retiredDomain {
	var out []retiredDomain
	maxAge := st.set.verpMaxAge() + time.Hour
	for _, r := range st.retired {
		if !strings.EqualFold(r.domain, next) && now.Before(r.at.Add(maxAge)) {
			out = append(out, r)
		}
	}
	if cur := st.set.VERPDomain; cur != "" && !strings.EqualFold(cur, next) {
		out = append(out, retiredDomain{domain: cur, at: now})
	}
	if len(out) > maxRetired {
		out = out[len(out)-maxRetired:]
	}
	return out
}

// domainAccepts reports whether a token issued at issued (zero: legacy)
// may name domain: the current VERP domain always, a retired one for the
// tokens minted before it was retired.
func (st *state) domainAccepts(domain string, issued time.Time) bool {
	if st.key == nil {
		return false
	}
	if cur := st.set.VERPDomain; cur != "" && strings.EqualFold(domain, cur) {
		return true
	}
	for _, r := range st.retired {
		if strings.EqualFold(domain, r.domain) && !issued.After(r.at) {
			return true
		}
	}
	return false
}

// Prepare is the first half of a reload: it checks s and builds what can
// fail (loading or creating the VERP key when VERP is turned on) without
// changing anything; apply, which cannot fail, swaps s in. After apply,
// DSNs quote the new retry.max_age and come from the new bounces.from,
// VERPAddress mints tokens for the new bounces.verp_domain and the intake
// verifies them, suppression follows the new bounces.suppress.
//
// A VERP domain replaced by a reload stays accepted at the intake for the
// tokens minted before the reload (to the hour, the resolution of a
// token's minting time; until they expire, bounces.verp_max_age):
// mail in flight keeps its bounce address, and refusing its bounces would
// lose exactly the reports VERP exists for. Only this process remembers
// them (up to maxRetired); after a restart only the configured domain is
// accepted. The intake's limits (bounces.intake) apply to connections
// accepted after apply. bounces.listen and bounces.suppress_for take
// effect only at start (config.Restart).
func (b *Bouncer) Prepare(s Settings) (apply func(), err error) {
	st, err := b.newState(s, b.state())
	if err != nil {
		return nil, err
	}
	return func() { b.st.Store(st) }, nil
}

// verpMaxAge is bounces.verp_max_age (default verpDefaultAge).
func (s Settings) verpMaxAge() time.Duration {
	if d := s.VERPMaxAge.D(); d > 0 {
		return d
	}
	return verpDefaultAge
}
