package netguard

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// defaultDenied is the source of DefaultDenied, with the reason for each.
var defaultDenied = []struct{ prefix, why string }{
	{"0.0.0.0/8", "this network; 0.0.0.0 reaches the local host (RFC 791, RFC 6890)"},
	{"10.0.0.0/8", "private (RFC 1918)"},
	{"100.64.0.0/10", "carrier-grade NAT shared space (RFC 6598)"},
	{"127.0.0.0/8", "loopback (RFC 1122 §3.2.1.3)"},
	{"169.254.0.0/16", "link-local, cloud metadata services (RFC 3927)"},
	{"172.16.0.0/12", "private (RFC 1918)"},
	{"192.168.0.0/16", "private (RFC 1918)"},
	{"224.0.0.0/4", "multicast (RFC 5771); no SMTP server lives there"},
	{"240.0.0.0/4", "reserved (RFC 1112 §4): not routable on the Internet, some networks use it internally"},
	{"255.255.255.255/32", "limited broadcast (RFC 919, RFC 8190), reaches the local segment"},
	{"::/128", "unspecified address, reaches the local host (RFC 4291 §2.5.2)"},
	{"::1/128", "loopback (RFC 4291 §2.5.3)"},
	{"64:ff9b::/96", "NAT64 well-known prefix: embeds any IPv4 address, internal ones too (RFC 6052)"},
	{"64:ff9b:1::/48", "NAT64 local-use prefix (RFC 8215)"},
	{"2002::/16", "6to4: embeds any IPv4 address, internal ones too (RFC 3056)"},
	{"fc00::/7", "unique local (RFC 4193)"},
	{"fe80::/10", "link-local (RFC 4291 §2.5.6)"},
	{"ff00::/8", "multicast (RFC 4291 §2.7)"},
}

// DefaultDenied returns the networks jetrelay never dials for a destination
// chosen from outside unless the operator allows them: loopback, private,
// shared, link-local, unique-local, multicast, reserved and unspecified
// space, and the IPv6 translation prefixes (NAT64, 6to4) that embed an IPv4
// address. IPv4-mapped IPv6 forms are covered because Check unmaps first.
// The result is a fresh slice.
func DefaultDenied() []netip.Prefix {
	out := make([]netip.Prefix, len(defaultDenied))
	for i, d := range defaultDenied {
		out[i] = netip.MustParsePrefix(d.prefix)
	}
	return out
}

// ParsePrefix parses one configured network: a CIDR prefix ("10.0.0.0/8",
// "fc00::/7") or a single address ("127.0.0.1" is 127.0.0.1/32, "::1" is
// ::1/128). A prefix with host bits set ("10.1.2.3/8") is an error naming
// the intended network, as is an address with a zone. IPv4-mapped IPv6
// prefixes are returned in their IPv4 form.
func ParsePrefix(s string) (netip.Prefix, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return netip.Prefix{}, errors.New("empty network; want a prefix such as 10.0.0.0/8 or an address")
	}
	if strings.Contains(t, "%") {
		return netip.Prefix{}, fmt.Errorf("%q: a network cannot have an IPv6 zone", s)
	}
	if !strings.Contains(t, "/") {
		ip, err := netip.ParseAddr(t)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is neither an IP address nor a prefix such as 10.0.0.0/8", s)
		}
		return normalize(netip.PrefixFrom(ip, ip.BitLen())), nil
	}
	p, err := netip.ParsePrefix(t)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a network prefix such as 10.0.0.0/8 or fc00::/7", s)
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Errorf("%q has bits set after the prefix length; did you mean %s?", s, m)
	}
	return normalize(p), nil
}

// ParsePrefixes parses a configured list; every bad entry is reported, each
// prefixed with its index ("[2]: ...") so callers can add the YAML path.
func ParsePrefixes(list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	var errs []error
	for i, s := range list {
		p, err := ParsePrefix(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("[%d]: %w", i, err))
			continue
		}
		out = append(out, p)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// normalize masks p and turns an IPv4-mapped IPv6 prefix (::ffff:0:0/96 and
// longer) into the IPv4 prefix it covers, because Check matches unmapped
// addresses. A shorter IPv6 prefix that contains all of ::ffff:0:0/96 (such
// as ::/0) is kept as it is; it can never match an unmapped address, so in a
// denied list it would not deny IPv4 space (use 0.0.0.0/0 for that).
func normalize(p netip.Prefix) netip.Prefix {
	p = p.Masked()
	a := p.Addr()
	if a.Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p
}

func normalizeAll(ps []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ps))
	for _, p := range ps {
		if p.IsValid() {
			out = append(out, normalize(p))
		}
	}
	return out
}
