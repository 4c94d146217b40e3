package submit

import (
	"errors"
	"net/netip"
	"strings"
	"unicode/utf8"
)

// Limits from RFC 5321 §4.5.3.1.
const (
	maxLocalPart = 64
	maxDomain    = 255
	maxPath      = 254 // 256 octets of path minus the angle brackets
)

var (
	errAddrSyntax = errors.New("bad address syntax")
	errAddr8Bit   = errors.New("8-bit address without SMTPUTF8")
)

// mailbox is a checked address. Local holds the local part as go-smtp
// returned it (a quoted-string already unquoted); Domain is lowercased, IDNs
// as given (no punycode conversion). Literal marks an address literal.
type mailbox struct {
	Local   string
	Domain  string
	Literal bool
}

// String renders the address for the envelope, quoting the local part when
// it is not a dot-atom (RFC 5321 §4.1.2).
func (m mailbox) String() string {
	if isDotAtom(m.Local) {
		return m.Local + "@" + m.Domain
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(m.Local); i++ {
		if c := m.Local[i]; c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(m.Local[i])
	}
	b.WriteString(`"@`)
	b.WriteString(m.Domain)
	return b.String()
}

// parseMailbox checks an address from MAIL or RCPT as go-smtp parsed it
// (its parser accepts any byte but space, tab and '>' in the domain, and
// control characters in local parts). utf8OK is the transaction's SMTPUTF8
// flag (RFC 6531 §3.3). It never panics on any input.
func parseMailbox(addr string, utf8OK bool) (mailbox, error) {
	if addr == "" || len(addr) > maxPath {
		return mailbox{}, errAddrSyntax
	}
	eight := false
	for i := 0; i < len(addr); i++ {
		c := addr[i]
		if c < 0x20 || c == 0x7f {
			return mailbox{}, errAddrSyntax // NUL, CR, LF and other controls
		}
		if c >= 0x80 {
			eight = true
		}
	}
	if eight {
		if !utf8OK {
			return mailbox{}, errAddr8Bit
		}
		if !utf8.ValidString(addr) {
			return mailbox{}, errAddrSyntax
		}
	}
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 || at == len(addr)-1 {
		return mailbox{}, errAddrSyntax
	}
	local, domain := addr[:at], addr[at+1:]
	if len(local) > maxLocalPart || len(domain) > maxDomain {
		return mailbox{}, errAddrSyntax
	}
	if strings.HasPrefix(domain, "[") {
		if !validAddressLiteral(domain) {
			return mailbox{}, errAddrSyntax
		}
		return mailbox{Local: local, Domain: strings.ToLower(domain), Literal: true}, nil
	}
	if !validDomain(domain, utf8OK) {
		return mailbox{}, errAddrSyntax
	}
	return mailbox{Local: local, Domain: strings.ToLower(domain)}, nil
}

// isDotAtom reports whether s is an RFC 5322 §3.2.3 dot-atom-text (with
// UTF-8 atext allowed, RFC 6532 §3.2).
func isDotAtom(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for _, r := range s {
		if r != '.' && !isAtext(r) {
			return false
		}
	}
	return true
}

func isAtext(r rune) bool {
	switch {
	case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		return true
	case r >= utf8.RuneSelf:
		return r != utf8.RuneError
	}
	return strings.ContainsRune("!#$%&'*+-/=?^_`{|}~", r)
}

// validDomain checks RFC 5321 §4.1.2 Domain syntax: dot-separated labels of
// letters, digits and inner hyphens, each at most 63 octets; with SMTPUTF8,
// U-labels (non-ASCII letters) too.
func validDomain(d string, utf8OK bool) bool {
	if d == "" || len(d) > maxDomain {
		return false
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' ||
				utf8OK && r >= utf8.RuneSelf && r != utf8.RuneError
			if !ok {
				return false
			}
		}
	}
	return true
}

// validAddressLiteral checks "[1.2.3.4]" or "[IPv6:…]" (RFC 5321 §4.1.3).
func validAddressLiteral(s string) bool {
	if len(s) < 3 || s[0] != '[' || s[len(s)-1] != ']' {
		return false
	}
	in := s[1 : len(s)-1]
	if v6, ok := cutPrefixFold(in, "IPv6:"); ok {
		a, err := netip.ParseAddr(v6)
		return err == nil && a.Is6() && a.Zone() == ""
	}
	a, err := netip.ParseAddr(in)
	return err == nil && a.Is4()
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || !strings.EqualFold(s[:len(prefix)], prefix) {
		return s, false
	}
	return s[len(prefix):], true
}

// validHelo checks the EHLO/HELO argument (RFC 5321 §4.1.1.1): a domain or
// an address literal. Single-label names and underscores are tolerated
// (common on workstations); anything else, and every control or 8-bit
// byte, is refused, so a valid argument is safe to log and to put into a
// Received: field as it is.
func validHelo(s string) bool {
	if s == "" || len(s) > maxDomain {
		return false
	}
	if s[0] == '[' {
		return validAddressLiteral(s)
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// sanitize keeps s printable ASCII and free of the characters that would
// break a header comment, for text that goes into a Received: field.
func sanitize(s string, max int) string {
	var b strings.Builder
	for i := 0; i < len(s) && b.Len() < max; i++ {
		c := s[i]
		if c < 0x21 || c > 0x7e || c == '(' || c == ')' || c == '\\' || c == ';' {
			c = '?'
		}
		b.WriteByte(c)
	}
	return b.String()
}
