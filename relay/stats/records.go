package stats

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

const (
	// maxDomains bounds the recipient domains one d.<user>.<hour> key
	// lists (recipient domains are chosen by whoever the application
	// mails); the rest are counted under otherDomain.
	maxDomains = 500
	// otherDomain collects the domains over maxDomains.
	otherDomain = "*"
	// maxUsers bounds the users an =all key lists; users over it are
	// counted in =all but not listed (Rows leaves them out).
	maxUsers = 10000
	// allToken and noUserToken are the key tokens of all users together
	// and of events without a user; escaped names never take these forms.
	allToken    = "=all"
	noUserToken = "=none"
)

// vec is Counts as an array, for compact JSON: accepted, delivered,
// deferred, bounced, complaints, suppressed.
type vec [6]int64

func toVec(c Counts) vec {
	return vec{c.Accepted, c.Delivered, c.Deferred, c.Bounced, c.Complaints, c.Suppressed}
}

func (v vec) counts() Counts {
	return Counts{Accepted: v[0], Delivered: v[1], Deferred: v[2], Bounced: v[3], Complaints: v[4], Suppressed: v[5]}
}

func (v *vec) add(o vec) {
	for i := range v {
		v[i] += o[i]
	}
}

// minuteRec is the value of m.<user>.<hour>: counts by minute of the hour
// (0-59) and, for =all, the users seen in the hour.
type minuteRec struct {
	M map[int]vec `json:"m"`
	U []string    `json:"u,omitempty"`
}

func (r *minuteRec) merge(d *minuteRec) {
	if r.M == nil {
		r.M = map[int]vec{}
	}
	for m, v := range d.M {
		x := r.M[m]
		x.add(v)
		r.M[m] = x
	}
	for _, u := range d.U {
		if len(r.U) >= maxUsers {
			break
		}
		if !slices.Contains(r.U, u) {
			r.U = append(r.U, u)
		}
	}
}

// domainRec is the value of d.<user>.<hour>: counts by recipient domain
// ("" for accepted recipients an accepted event does not list).
type domainRec struct {
	D map[string]vec `json:"d"`
}

func (r *domainRec) merge(d *domainRec) {
	if r.D == nil {
		r.D = map[string]vec{}
	}
	for dom, v := range d.D {
		if _, ok := r.D[dom]; !ok && len(r.D) >= maxDomains {
			dom = otherDomain
		}
		x := r.D[dom]
		x.add(v)
		r.D[dom] = x
	}
}

// KeyToken is a user name as one KV key token (relay/guard uses it too).
func KeyToken(user string) string { return userToken(user) }

// TokenUser reverses KeyToken.
func TokenUser(tok string) string { return tokenUser(tok) }

// userToken escapes a user name into one KV key token: letters, digits,
// '-' and '_' stay, every other byte is =XX (hex).
func userToken(u string) string {
	if u == "" {
		return noUserToken
	}
	var b strings.Builder
	for i := 0; i < len(u); i++ {
		c := u[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "=%02X", c)
	}
	return b.String()
}

// tokenUser reverses userToken.
func tokenUser(tok string) string {
	if tok == noUserToken {
		return ""
	}
	var b strings.Builder
	for i := 0; i < len(tok); i++ {
		if tok[i] == '=' && i+2 < len(tok) {
			if n, err := strconv.ParseUint(tok[i+1:i+3], 16, 8); err == nil {
				b.WriteByte(byte(n))
				i += 2
				continue
			}
		}
		b.WriteByte(tok[i])
	}
	return b.String()
}

func minuteKey(tok string, hour int64) string { return "m." + tok + "." + strconv.FormatInt(hour, 10) }
func domainKey(tok string, hour int64) string { return "d." + tok + "." + strconv.FormatInt(hour, 10) }

// hourOf is t's Unix hour.
func hourOf(t time.Time) int64 { return t.Unix() / 3600 }

// hourStart is the start of Unix hour h.
func hourStart(h int64) time.Time { return time.Unix(h*3600, 0).UTC() }
