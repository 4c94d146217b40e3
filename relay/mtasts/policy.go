// Package mtasts implements the sending side of SMTP MTA Strict Transport
// Security (RFC 8461): the _mta-sts TXT record, the HTTPS policy fetch and
// a policy cache in JetStream KV shared by every node. It answers
// relay/smtpclient's STSSource; the client enforces the policy.
//
// It is written on relay/dnsclient and net/http rather than a library:
// neither maddy's go-mtasts nor mox's mtasts is available as a module
// here, and the protocol is small (a record, a key/value file, one match
// rule).
package mtasts

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jetrelay/jetrelay/relay/smtpclient"
)

// MaxMaxAge is the largest max_age a policy may give (RFC 8461 §3.2).
const MaxMaxAge = 31557600

// maxMX bounds the mx lines of one policy (bounded input).
const maxMX = 100

// Policy is a parsed policy file (RFC 8461 §3.2).
type Policy struct {
	Mode   smtpclient.STSMode `json:"mode"`
	MX     []string           `json:"mx,omitempty"`
	MaxAge int64              `json:"max_age"` // seconds
}

// ErrInvalid marks a syntactically invalid record or policy.
var ErrInvalid = errors.New("invalid")

// ParseRecord parses a _mta-sts TXT record (RFC 8461 §3.1) and returns
// its id.
func ParseRecord(txt string) (string, error) {
	fields := strings.Split(strings.TrimRight(strings.TrimSpace(txt), ";"), ";")
	if strings.TrimSpace(fields[0]) != "v=STSv1" {
		return "", fmt.Errorf("%w: record does not start with v=STSv1", ErrInvalid)
	}
	id := ""
	for _, f := range fields[1:] {
		k, v, ok := strings.Cut(strings.TrimSpace(f), "=")
		if !ok {
			return "", fmt.Errorf("%w: record field %q", ErrInvalid, f)
		}
		if k == "id" {
			id = v
		}
	}
	if id == "" || len(id) > 32 || strings.IndexFunc(id, notAlnum) >= 0 {
		return "", fmt.Errorf("%w: record id %q (1-32 letters and digits)", ErrInvalid, id)
	}
	return id, nil
}

func notAlnum(r rune) bool {
	return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9')
}

// ParsePolicy parses a policy file (RFC 8461 §3.2): "key: value" lines
// ending in CRLF or LF; version STSv1, mode enforce|testing|none, max_age
// 0..31557600 and, unless mode is none, at least one mx pattern. Unknown
// keys are ignored.
func ParsePolicy(body []byte) (Policy, error) {
	var p Policy
	var version, maxAge string
	for _, line := range strings.Split(string(body), "\n") {
		line = strings.TrimSuffix(line, "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			return Policy{}, fmt.Errorf("%w: policy line %q", ErrInvalid, truncate(line))
		}
		v = strings.TrimSpace(v)
		switch strings.TrimSpace(k) {
		case "version":
			version = v
		case "mode":
			p.Mode = smtpclient.STSMode(v)
		case "max_age":
			maxAge = v
		case "mx":
			if len(p.MX) >= maxMX || !validPattern(v) {
				return Policy{}, fmt.Errorf("%w: mx %q", ErrInvalid, truncate(v))
			}
			p.MX = append(p.MX, strings.ToLower(v))
		}
	}
	return p, p.check(version, maxAge)
}

func (p *Policy) check(version, maxAge string) error {
	if version != "STSv1" {
		return fmt.Errorf("%w: version %q", ErrInvalid, truncate(version))
	}
	switch p.Mode {
	case smtpclient.STSEnforce, smtpclient.STSTesting:
		if len(p.MX) == 0 {
			return fmt.Errorf("%w: no mx", ErrInvalid)
		}
	case smtpclient.STSNone:
	default:
		return fmt.Errorf("%w: mode %q", ErrInvalid, truncate(string(p.Mode)))
	}
	n, err := strconv.ParseInt(maxAge, 10, 64)
	if err != nil || n < 0 || n > MaxMaxAge || strings.HasPrefix(maxAge, "+") {
		return fmt.Errorf("%w: max_age %q", ErrInvalid, truncate(maxAge))
	}
	p.MaxAge = n
	return nil
}

// validPattern: a host name, or "*." and one, of letters, digits, '-'
// and dots.
func validPattern(v string) bool {
	v = strings.TrimPrefix(v, "*.")
	if v == "" || len(v) > 253 || strings.Contains(v, "*") {
		return false
	}
	for _, label := range strings.Split(v, ".") {
		if label == "" || len(label) > 63 || strings.IndexFunc(label, func(r rune) bool {
			return notAlnum(r) && r != '-' && r != '_'
		}) >= 0 {
			return false
		}
	}
	return true
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
