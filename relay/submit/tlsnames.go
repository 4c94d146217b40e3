package submit

import (
	"crypto/tls"
	"strings"
)

// The names of the TLS versions and cipher suites crypto/tls knows, built
// once: tls.CipherSuiteName builds the whole list of suites on each call,
// and the Received field and the accepted event name them for every message.
var (
	cipherNames  = map[uint16]string{}
	versionNames = map[uint16]string{}
)

func init() {
	for _, c := range append(tls.CipherSuites(), tls.InsecureCipherSuites()...) {
		cipherNames[c.ID] = c.Name
	}
	for _, v := range []uint16{tls.VersionTLS10, tls.VersionTLS11, tls.VersionTLS12, tls.VersionTLS13} {
		versionNames[v] = strings.ReplaceAll(tls.VersionName(v), " ", "")
	}
}

// tlsVersionName is "TLS1.3" and the like (no space: log fields, comments).
func tlsVersionName(v uint16) string {
	if n, ok := versionNames[v]; ok {
		return n
	}
	return strings.ReplaceAll(tls.VersionName(v), " ", "")
}

// cipherSuiteName is tls.CipherSuiteName without its allocations.
func cipherSuiteName(id uint16) string {
	if n, ok := cipherNames[id]; ok {
		return n
	}
	return tls.CipherSuiteName(id)
}
