package msgindex

import (
	"bytes"
	"encoding/json"
	"strings"
)

// matcher applies a Query to stored records: a byte pre-filter on the
// stored JSON first (every needle must occur, ASCII case folded), so
// only candidates are decoded, then the exact comparison on the decoded
// summary.
type matcher struct {
	q       Query
	needles [][]byte
	low     []byte // reused lower-cased copy of the record
}

func newMatcher(q Query) *matcher {
	m := &matcher{q: q}
	add := func(s string) {
		if s != "" {
			m.needles = append(m.needles, jsonLower(s))
		}
	}
	add(addrNeedle(q.Rcpt))
	add(addrNeedle(q.From))
	add(q.QueueID)
	add(strings.Trim(q.MsgID, "<>"))
	add(q.User)
	for k, v := range q.Meta {
		add(k)
		add(v)
	}
	if q.Status != "" {
		m.needles = append(m.needles, []byte(`"status":"`+q.Status+`"`))
	}
	return m
}

// addrNeedle is what must occur in a record matching an address query:
// the address, or "@domain" for a domain query.
func addrNeedle(s string) string {
	if s == "" || strings.Contains(s[1:], "@") {
		return s
	}
	return "@" + strings.TrimPrefix(s, "@")
}

// jsonLower is s as it appears in stored JSON (escaped, no quotes),
// lower-cased.
func jsonLower(s string) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	out := bytes.TrimSuffix(b.Bytes(), []byte("\n"))
	return lowerASCII(nil, out[1:len(out)-1])
}

func lowerASCII(dst, src []byte) []byte {
	for _, c := range src {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

// candidate reports whether the stored bytes can match.
func (m *matcher) candidate(data []byte) bool {
	if len(m.needles) == 0 {
		return true
	}
	m.low = lowerASCII(m.low[:0], data)
	for _, n := range m.needles {
		if !bytes.Contains(m.low, n) {
			return false
		}
	}
	return true
}

// match is the exact test on a decoded summary.
func (m *matcher) match(s *Summary) bool {
	q := m.q
	switch {
	case q.QueueID != "" && !strings.EqualFold(s.QueueID, q.QueueID),
		q.MsgID != "" && !strings.EqualFold(strings.Trim(s.MsgID, "<>"), strings.Trim(q.MsgID, "<>")),
		q.User != "" && !strings.EqualFold(s.User, q.User),
		q.From != "" && !addrMatch(s.From, q.From),
		!q.Since.IsZero() && s.QueueID < idFloor(q.Since),
		!q.Until.IsZero() && s.QueueID >= idFloor(q.Until):
		return false // the time range is on the queue id's time (the acceptance)
	}
	for k, v := range q.Meta {
		if s.Meta[k] != v {
			return false
		}
	}
	if q.Rcpt != "" && !anyRcpt(s, func(r RcptState) bool { return addrMatch(r.Addr, q.Rcpt) }) {
		return false
	}
	if q.Status != "" && s.Status != q.Status && !anyRcpt(s, func(r RcptState) bool { return r.Status == q.Status }) {
		return false
	}
	return true
}

func anyRcpt(s *Summary, f func(RcptState) bool) bool {
	for _, r := range s.Rcpts {
		if f(r) {
			return true
		}
	}
	return false
}

// addrMatch matches an address against a query: the whole address, or
// its domain when the query is "@domain" or "domain" (ASCII case-insensitive).
func addrMatch(addr, q string) bool {
	if q == "" {
		return true
	}
	if strings.Contains(q[1:], "@") {
		return strings.EqualFold(addr, q)
	}
	at := strings.LastIndexByte(addr, '@')
	return at >= 0 && strings.EqualFold(addr[at+1:], strings.TrimPrefix(q, "@"))
}
