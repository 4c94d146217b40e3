// Package dnsname turns the domain of an address as a sender wrote it into
// the form DNS is asked about. Recipient domains arrive as U-labels
// ("bücher.example", RFC 6531 SMTPUTF8) or in any letter case; looked up
// unconverted they give NXDOMAIN, which would bounce and suppress a valid
// recipient (issue 12 point 8). ToASCII applies UTS #46 processing with the
// IDNA2008 rules of golang.org/x/net/idna's Lookup profile (non-transitional:
// "ß" stays "ß" and becomes "xn--zca"), checks RFC 1035 length limits, and
// returns lower-case A-labels.
//
// UTS #46 is more permissive than the IDNA2008 derived properties in one
// respect that matters to users: symbol and emoji labels ("😀.example")
// convert (to "xn--e28h.example") instead of failing, as they do in
// browsers; such names exist under some TLDs, and whether they have mail
// servers is for DNS to say.
package dnsname

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// RFC 1035 §2.3.4 limits, in octets of the presentation form without the
// final dot.
const (
	MaxName  = 253
	MaxLabel = 63
)

// Error says why a name cannot be looked up. Name is the input as given.
type Error struct {
	Name   string
	Reason string
}

func (e *Error) Error() string { return fmt.Sprintf("invalid domain name %q: %s", e.Name, e.Reason) }

// ErrInvalid is matched by every *Error through errors.Is.
var ErrInvalid = errors.New("invalid domain name")

// Is makes errors.Is(err, ErrInvalid) true for every *Error.
func (e *Error) Is(target error) bool { return target == ErrInvalid }

// ToASCII returns domain as lower-case A-labels without a trailing dot:
// "Bücher.Example." becomes "xn--bcher-kva.example". One trailing dot (a
// fully qualified name) is accepted and removed; callers that need it for
// DNS add it back (dns.Fqdn). Names that are already A-labels are checked
// (a malformed "xn--" label is an error) and lower-cased. An address
// literal ("[192.0.2.1]"), invalid UTF-8, an empty name, an empty label, a
// label or name over the RFC 1035 limits, or anything UTS #46 with STD3
// rules rejects (controls, spaces, underscores, "/", U+FFFD, bad hyphens,
// malformed punycode) is an *Error.
func ToASCII(domain string) (string, error) {
	name := strings.TrimSuffix(domain, ".")
	if name == "" {
		return "", &Error{Name: domain, Reason: "empty"}
	}
	if !utf8.ValidString(name) {
		// idna would map each bad byte to U+FFFD and encode that.
		return "", &Error{Name: domain, Reason: "not valid UTF-8"}
	}
	if strings.HasPrefix(name, "[") {
		return "", &Error{Name: domain, Reason: "an address literal is not a domain name"}
	}
	a, err := idna.Lookup.ToASCII(name)
	if err != nil {
		return "", &Error{Name: domain, Reason: reason(err)}
	}
	a = strings.ToLower(a)
	if len(a) > MaxName {
		return "", &Error{Name: domain, Reason: fmt.Sprintf("longer than %d octets in ASCII form", MaxName)}
	}
	for _, l := range strings.Split(a, ".") {
		switch {
		case l == "":
			return "", &Error{Name: domain, Reason: "empty label"}
		case len(l) > MaxLabel:
			return "", &Error{Name: domain, Reason: fmt.Sprintf("a label is longer than %d octets", MaxLabel)}
		}
	}
	return a, nil
}

// reason shortens the idna package's message ("idna: disallowed rune
// U+1F600") to its reason.
func reason(err error) string {
	return strings.TrimPrefix(err.Error(), "idna: ")
}
